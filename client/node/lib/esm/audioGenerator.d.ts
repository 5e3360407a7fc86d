/**
 * The seed's module API (helpers/audioGenerator), kept name for name on top of TtsClient:
 * generateAudio, createMessageChunks, processMessageChunks, healthCheck, getWorkerStatus,
 * shutdownWorkerManager, plus configure() to choose the broker.
 *
 * One module-level client is created on first use from configure(...) or TTS_BROKER_URL.
 */
import { TtsClient } from "./client.js";
import type { StatusView, SynthesisResult, SynthesizeOptions, TtsClientOptions, VoiceValue } from "./types.js";
/** One voice line, as the seed's processMessageChunks takes them (snake_case keys are accepted too). */
export interface VoiceMessage {
    text: string;
    speaker?: string | null;
    id: string | number;
    /** Default 0, as in the Python client. */
    streamIndex?: string | number;
    stream_index?: string | number;
    /** Engine settings for this line. */
    voice?: Record<string, VoiceValue>;
    voice_settings?: Record<string, VoiceValue>;
}
export interface GeneratorOptions extends TtsClientOptions {
    /** Most jobs processMessageChunks keeps in flight at once. Default 256. */
    maxInFlight?: number;
    /** healthCheck's time limit (ms). Default 2000. */
    healthTimeoutMs?: number;
}
/** Choose the broker and client options; closes the previous module client. Throws on a malformed URL. */
export declare function configure(options?: GeneratorOptions): void;
/** The module's client (created on first use). */
export declare function getClient(): TtsClient;
/**
 * Synthesise one line and write `{streamIndex}_{id}.wav` atomically inside `outputDir` (created if needed).
 * Resolves with the file's absolute path.
 */
export declare function generateAudio(text: string, speaker: string | null | undefined, id: string | number, streamIndex: string | number, outputDir: string, options?: SynthesizeOptions): Promise<string>;
/** Write a result as a WAV file, atomically. */
export declare function writeWav(filePath: string, result: SynthesisResult): Promise<void>;
/** Split `messages` into consecutive chunks of at most `size`. */
export declare function createMessageChunks<T>(messages: readonly T[], size: number): T[][];
export interface BatchOptions extends Omit<SynthesizeOptions, "jobId" | "jobIdPrefix"> {
    /** Most jobs in flight at once (default: configure's maxInFlight, else 256). */
    maxInFlight?: number;
    /** "raise" (default): after the batch, throw BatchFailedError if any line failed. "skip": return what was written. */
    onError?: "raise" | "skip";
}
/**
 * Generate every message of every chunk into `outputDir`; resolves with the written paths in message order.
 *
 * Unlike the seed, chunks do not wait for each other: up to maxInFlight jobs are in flight at once and the
 * broker spreads them over its workers. A failed line does not stop the others (as in the Python client);
 * see onError. Every target path is checked before anything is submitted.
 */
export declare function processMessageChunks(chunks: readonly (readonly VoiceMessage[])[], outputDir: string, options?: BatchOptions): Promise<string[]>;
/** True when the broker answers within the time limit, is not draining and has at least one worker. */
export declare function healthCheck(options?: {
    timeoutMs?: number;
}): Promise<boolean>;
/** The broker's status view: queue, job counters and every worker (asynchronous, unlike the seed). */
export declare function getWorkerStatus(): Promise<StatusView>;
/** Close the module's client; pending calls reject with ClosedError. The next call opens a new one. */
export declare function shutdownWorkerManager(): Promise<void>;
