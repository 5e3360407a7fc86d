/** Error classes of the Node client. Every error it throws is a TtsError with a stable `code`. */
export type TtsErrorCode = "timeout" | "job_failed" | "request_failed" | "protocol" | "closed" | "aborted" | "invalid_argument" | "unavailable" | "batch_failed";
/** Root of every error the client throws; switch on `code`, not on the message. */
export declare class TtsError extends Error {
    readonly code: TtsErrorCode;
    constructor(code: TtsErrorCode, message: string, options?: {
        cause?: unknown;
    });
}
/** A job or request did not finish within its time limit. */
export declare class TimeoutError extends TtsError {
    readonly timeoutMs: number;
    constructor(message: string, timeoutMs: number);
}
/** The broker answered ERROR for a request (status, ping, reload); carries the remote code. */
export declare class RequestFailedError extends TtsError {
    readonly remoteCode: string;
    readonly remoteMessage: string;
    readonly retryable: boolean;
    constructor(remoteCode: string, remoteMessage: string, retryable: boolean, code?: TtsErrorCode);
}
/** A job ended with an ERROR from the broker (engine_error, cancelled, max_attempts, ...). */
export declare class JobFailedError extends RequestFailedError {
    readonly jobId: string;
    constructor(jobId: string, remoteCode: string, remoteMessage: string, retryable: boolean);
}
/** A message that does not follow TTSP/2 (from the broker, or one we were asked to build). */
export declare class ProtocolError extends TtsError {
    constructor(message: string, options?: {
        cause?: unknown;
    });
}
/** The client was closed (before or while the call was pending). */
export declare class ClosedError extends TtsError {
    constructor(message?: string);
}
/** The caller's AbortSignal fired; `cause` holds the signal's reason. */
export declare class AbortError extends TtsError {
    constructor(message: string, reason?: unknown);
}
/** A bad argument or setting, e.g. a malformed broker URL or an empty text. */
export declare class InvalidArgumentError extends TtsError {
    constructor(message: string, options?: {
        cause?: unknown;
    });
}
/** The broker could not be reached within the time allowed. */
export declare class BrokerUnavailableError extends TtsError {
    constructor(message: string);
}
/** Some lines of a processMessageChunks batch failed; the others were written. */
export declare class BatchFailedError extends TtsError {
    /** Files that were written, in message order. */
    readonly paths: string[];
    /** The lines that failed: their id and error. */
    readonly failures: {
        id: string | number;
        error: Error;
    }[];
    constructor(message: string, paths: string[], failures: {
        id: string | number;
        error: Error;
    }[]);
}
