/** JobStream: a streamed job's audio as an async iterable of chunks, plus its final result. */
import type { AudioChunk, SynthesisResult } from "./types.js";
/**
 * Chunks arrive from PARTIAL messages and are delivered in order. A retried job restarts its partials
 * (seq 0, higher attempt): chunks below the count already delivered are skipped. When RESULT arrives, any
 * audio the partials did not deliver (missed or skipped chunks) is delivered from the whole utterance, so
 * the concatenated chunks always equal the result's audio for deterministic engines.
 */
export declare class JobStream implements AsyncIterable<AudioChunk> {
    private readonly onEarlyExit;
    readonly jobId: string;
    /** The final result (whole utterance and metadata); rejects like the iteration does. */
    readonly result: Promise<SynthesisResult>;
    private readonly entries;
    private waiter;
    private delivered;
    private deliveredBytes;
    private attempt;
    private gap;
    private finished;
    private iterating;
    private resolveResult;
    private rejectResult;
    constructor(jobId: string, onEarlyExit: () => void);
    /** A PARTIAL for this job (called by the client). */
    pushPartial(attempt: number, seq: number, pcm: Uint8Array, sampleRate: number, channels: number): void;
    /** The RESULT (called by the client): deliver what is missing, then end. */
    finish(result: SynthesisResult): void;
    /** End the stream with an error (called by the client). */
    fail(err: Error): void;
    [Symbol.asyncIterator](): AsyncIterator<AudioChunk>;
    private deliver;
    private wake;
}
