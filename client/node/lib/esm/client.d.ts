/**
 * TtsClient: one DEALER socket to the broker's frontend, one receive loop routing replies by job id or
 * request id, one serialised send queue.
 *
 * Reliability (PROTOCOL.md section 9, carried out by JobTable in jobs.ts): job ids are idempotency keys, so
 * the client resubmits a job with the same id whenever it may have been lost: after a broker restart (PING
 * every pingIntervalMs; a new broker_id in PONG, or PONGs coming back after a silence), when the broker has
 * said nothing about a job for resubmitAfterMs, and after a retryable ERROR (with backoff), until the
 * call's timeout.
 *
 * An idle client does not keep the Node process alive: the receive loop runs only while jobs or requests are
 * pending (it polls with a 1 s receive timeout), and its timer is unref'd. close() it to free the socket.
 */
import { JobStream } from "./jobStream.js";
import { type JobState } from "./protocol/constants.js";
import type { ClientStats, JobView, Logger, PongInfo, ReloadOutcome, RequestOptions, StatusView, SynthesisResult, SynthesizeOptions, TtsClientOptions, VoiceValue } from "./types.js";
/** The broker URL the clients use: TTS_BROKER_URL, else tcp://127.0.0.1:5555. */
export declare function defaultBrokerUrl(env?: NodeJS.ProcessEnv): string;
/** A client of the TTS broker. Safe to share: every method may be called concurrently. */
export declare class TtsClient {
    readonly brokerUrl: string;
    readonly stats: ClientStats;
    private readonly opts;
    private readonly curve;
    /** Set once the broker refused our CURVE key; every pending and later call fails with it. */
    private refused;
    /** Socket monitor for CURVE handshake events, open until the first handshake succeeds (it keeps Node
     * alive, and a second monitor on the same socket blocks it). */
    private observer;
    private readonly routingId;
    readonly log: Logger;
    private socket;
    private sendQueue;
    private readonly jobTable;
    private readonly requests;
    private receiving;
    private ticker;
    private closing;
    private readonly watch;
    /** performance.now() of the last message from the broker (undefined: none yet) and of the socket's start. */
    private lastBrokerMsgMs;
    private socketStartMs;
    /** Throws InvalidArgumentError at once for a malformed broker URL; connects on first use. */
    constructor(options?: TtsClientOptions);
    /** A client connected to the broker; with waitMs, rejects with BrokerUnavailableError if no PONG comes. */
    static connect(options?: TtsClientOptions & {
        waitMs?: number;
    }): Promise<TtsClient>;
    /**
     * Open the socket (ZeroMQ connects in the background and reconnects by itself). With waitMs, also wait
     * until the broker answers a PING.
     */
    connect(options?: {
        waitMs?: number;
    }): Promise<this>;
    get isClosed(): boolean;
    /** Jobs submitted and not finished. */
    get pendingJobs(): number;
    /** Synthesise `text`; resolves with the whole utterance (PCM) and its metadata. */
    synthesize(text: string, options?: SynthesizeOptions): Promise<SynthesisResult>;
    /**
     * Synthesise `text` and deliver audio chunks while the engine produces them. Iterate the returned stream;
     * `.result` gives the final result. Leaving the loop early cancels the job.
     */
    stream(text: string, options?: SynthesizeOptions): JobStream;
    /** Ask the broker to cancel a job; its pending call then rejects with JobFailedError (code cancelled). */
    cancel(jobId: string): Promise<void>;
    /** The broker's status view (queue, jobs, workers). */
    status(options?: RequestOptions): Promise<StatusView>;
    /** The broker's view of one job. */
    jobStatus(jobId: string, options?: RequestOptions): Promise<JobView>;
    /** Recent jobs (live and retained), newest first; state "failed" gives the dead-letter list. */
    jobs(filter?: {
        state?: JobState | null;
        limit?: number;
    }, options?: RequestOptions): Promise<JobView[]>;
    /**
     * Put a failed or cancelled job back in the broker's queue (same id, attempts start again); resolves with
     * its new view. To wait for its result, synthesize() again with the same jobId: that attaches to it.
     */
    retry(jobId: string, options?: RequestOptions): Promise<JobView>;
    /**
     * A finished job's audio by its id alone (GET_RESULT), e.g. after retry() once the job is done; rejects with
     * RequestFailedError `not_found` (unknown, or no longer retained) or `bad_request` (not done).
     */
    getResult(jobId: string, options?: RequestOptions): Promise<SynthesisResult>;
    /** Round trip to the broker. */
    ping(options?: RequestOptions): Promise<PongInfo>;
    /** Hot-reload the workers serving `model` (null = all) with `options`; resolves with how many were told. */
    reload(model: string | null, options?: Record<string, VoiceValue>, request?: RequestOptions): Promise<number>;
    /**
     * Hot-reload and wait until each told worker is back (or `waitMs` passed); resolves with each one's outcome.
     * The request's timeout is extended by `waitMs`.
     */
    reloadWait(model: string | null, options?: Record<string, VoiceValue>, waitMs?: number, request?: RequestOptions): Promise<ReloadOutcome[]>;
    /** Close the socket and reject everything pending with ClosedError. Idempotent. */
    close(): Promise<void>;
    private submit;
    private request;
    private ensureSocket;
    private hasWork;
    private ensureReceiving;
    /**
     * Report a refused CURVE key (handshake:error:auth) at once. Watches only until a handshake succeeds: a
     * key revoked later refuses the next reconnection, and calls then end as BrokerUnavailable by timeout.
     */
    private watchHandshakes;
    private stopWatching;
    private receiveLoop;
    private dispatch;
    /** The broker's ZAP handler refused our key: say so now instead of timing out. */
    private onRefused;
    private onMalformed;
    /** Runs every TICK_MS while jobs are pending: the liveness PING every pingIntervalMs, quiet jobs. */
    private tick;
    /** The connect timeout: jobs that waited connectTimeoutMs while the broker said nothing (it never answered,
     * or went silent) fail with BrokerUnavailableError now, not at their jobTimeoutMs. */
    private failUnanswered;
    private sendFrames;
    private shutdown;
}
