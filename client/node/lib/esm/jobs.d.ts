/**
 * JobTable: the client's unfinished jobs and what it does for them, i.e. PROTOCOL.md section 9 (the retry
 * policy) as code. A job is resubmitted under its own id when the broker restarted or came back, when it went
 * quiet, and after a retryable ERROR (backoff from retryPolicy.ts, RETRY first), until the call's timeout.
 * Each job's promise settles exactly once; whatever comes for it later is dropped.
 */
import type { JobStream } from "./jobStream.js";
import type { ClientStats, Logger, SynthesisResult } from "./types.js";
/** A RESULT body (or RESULT_REPLY's `result`) and its audio as a SynthesisResult. */
export declare function synthesisResult(body: Record<string, unknown>, audio: Uint8Array): SynthesisResult;
/** What the table needs from its client. */
export interface JobTableHost {
    readonly log: Logger;
    readonly stats: ClientStats;
    closed(): boolean;
    /** Queue frames on the client's one socket, in order. */
    send(frames: Uint8Array[]): Promise<void>;
}
export interface JobPolicy {
    resubmitAfterMs: number;
    maxRetries: number;
    retryBackoffMs: number;
    retryBackoffMaxMs: number;
}
/** One job to track: its SUBMIT frames and how the call wants it to end. */
export interface JobRequest {
    id: string;
    frames: Uint8Array[];
    stream: JobStream | undefined;
    timeoutMs: number;
    signal: AbortSignal | undefined;
}
export declare class JobTable {
    private readonly host;
    private readonly policy;
    private readonly jobs;
    private retrySeq;
    constructor(host: JobTableHost, policy: JobPolicy);
    get size(): number;
    has(jobId: string): boolean;
    /** Track a job and send its SUBMIT; resolves with its result, rejects with its error. */
    add(req: JobRequest): Promise<SynthesisResult>;
    /** ACCEPTED or PARTIAL: the broker has the job. Returns its stream, if any. */
    heard(jobId: string, accepted: boolean): JobStream | undefined;
    /** RESULT: the job's answer (a duplicate, or one for a job already settled, is dropped). */
    onResult(jobId: string, body: Record<string, unknown>, audio: Uint8Array): void;
    /** ERROR about a job: retry it after a backoff if retryable, else fail it with the remote code. */
    onError(jobId: string, body: Record<string, unknown>): boolean;
    /** The broker restarted or answers again after a silence: resubmit every unfinished job, also one waiting
     * for a retry (its error came from a broker that may be gone). */
    resubmitAll(why: string): void;
    /** Resubmit the jobs the broker has said nothing about for resubmitAfterMs. */
    tick(now: number): void;
    /** Give up on a job locally; with cancel, tell the broker to drop it. */
    abandon(jobId: string, err: Error, cancel: boolean): void;
    /** Fail (and CANCEL, the broker may come back) every job that has waited limitMs since max(its start,
     * brokerHeardMs): the broker never answered it or went silent. */
    failUnanswered(now: number, brokerHeardMs: number, limitMs: number, error: (what: string) => Error): void;
    failAll(err: Error): void;
    /** The call's timeout: fail with the retryable error the job was waiting to retry (no CANCEL: the broker
     * holds no live job), else with TimeoutError and a CANCEL. */
    private timeOut;
    private resubmit;
    /** Send (or resend: same job id, so the broker attaches instead of duplicating) a job's SUBMIT. */
    private transmit;
    private settle;
}
