/** Error classes of the Node client. Every error it throws is a TtsError with a stable `code`. */
/** Root of every error the client throws; switch on `code`, not on the message. */
export class TtsError extends Error {
    code;
    constructor(code, message, options) {
        super(message, options);
        this.code = code;
        this.name = new.target.name;
    }
}
/** A job or request did not finish within its time limit. */
export class TimeoutError extends TtsError {
    timeoutMs;
    constructor(message, timeoutMs) {
        super("timeout", message);
        this.timeoutMs = timeoutMs;
    }
}
/** The broker answered ERROR for a request (status, ping, reload); carries the remote code. */
export class RequestFailedError extends TtsError {
    remoteCode;
    remoteMessage;
    retryable;
    constructor(remoteCode, remoteMessage, retryable, code = "request_failed") {
        super(code, `${remoteCode}: ${remoteMessage || "(no message)"}`);
        this.remoteCode = remoteCode;
        this.remoteMessage = remoteMessage;
        this.retryable = retryable;
    }
}
/** A job ended with an ERROR from the broker (engine_error, cancelled, max_attempts, ...). */
export class JobFailedError extends RequestFailedError {
    jobId;
    constructor(jobId, remoteCode, remoteMessage, retryable) {
        super(remoteCode, remoteMessage, retryable, "job_failed");
        this.jobId = jobId;
        this.message = `job ${jobId} failed: ${remoteCode}: ${remoteMessage || "(no message)"}`;
    }
}
/** A message that does not follow TTSP/2 (from the broker, or one we were asked to build). */
export class ProtocolError extends TtsError {
    constructor(message, options) {
        super("protocol", message, options);
    }
}
/** The client was closed (before or while the call was pending). */
export class ClosedError extends TtsError {
    constructor(message = "the TTS client is closed") {
        super("closed", message);
    }
}
/** The caller's AbortSignal fired; `cause` holds the signal's reason. */
export class AbortError extends TtsError {
    constructor(message, reason) {
        super("aborted", message, { cause: reason });
    }
}
/** A bad argument or setting, e.g. a malformed broker URL or an empty text. */
export class InvalidArgumentError extends TtsError {
    constructor(message, options) {
        super("invalid_argument", message, options);
    }
}
/** The broker could not be reached within the time allowed. */
export class BrokerUnavailableError extends TtsError {
    constructor(message) {
        super("unavailable", message);
    }
}
/** Some lines of a processMessageChunks batch failed; the others were written. */
export class BatchFailedError extends TtsError {
    /** Files that were written, in message order. */
    paths;
    /** The lines that failed: their id and error. */
    failures;
    constructor(message, paths, failures) {
        super("batch_failed", message, { cause: failures[0]?.error });
        this.paths = paths;
        this.failures = failures;
    }
}
