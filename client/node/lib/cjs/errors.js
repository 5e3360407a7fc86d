"use strict";
/** Error classes of the Node client. Every error it throws is a TtsError with a stable `code`. */
Object.defineProperty(exports, "__esModule", { value: true });
exports.BatchFailedError = exports.BrokerUnavailableError = exports.InvalidArgumentError = exports.AbortError = exports.ClosedError = exports.ProtocolError = exports.JobFailedError = exports.RequestFailedError = exports.TimeoutError = exports.TtsError = void 0;
/** Root of every error the client throws; switch on `code`, not on the message. */
class TtsError extends Error {
    code;
    constructor(code, message, options) {
        super(message, options);
        this.code = code;
        this.name = new.target.name;
    }
}
exports.TtsError = TtsError;
/** A job or request did not finish within its time limit. */
class TimeoutError extends TtsError {
    timeoutMs;
    constructor(message, timeoutMs) {
        super("timeout", message);
        this.timeoutMs = timeoutMs;
    }
}
exports.TimeoutError = TimeoutError;
/** The broker answered ERROR for a request (status, ping, reload); carries the remote code. */
class RequestFailedError extends TtsError {
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
exports.RequestFailedError = RequestFailedError;
/** A job ended with an ERROR from the broker (engine_error, cancelled, max_attempts, ...). */
class JobFailedError extends RequestFailedError {
    jobId;
    constructor(jobId, remoteCode, remoteMessage, retryable) {
        super(remoteCode, remoteMessage, retryable, "job_failed");
        this.jobId = jobId;
        this.message = `job ${jobId} failed: ${remoteCode}: ${remoteMessage || "(no message)"}`;
    }
}
exports.JobFailedError = JobFailedError;
/** A message that does not follow TTSP/2 (from the broker, or one we were asked to build). */
class ProtocolError extends TtsError {
    constructor(message, options) {
        super("protocol", message, options);
    }
}
exports.ProtocolError = ProtocolError;
/** The client was closed (before or while the call was pending). */
class ClosedError extends TtsError {
    constructor(message = "the TTS client is closed") {
        super("closed", message);
    }
}
exports.ClosedError = ClosedError;
/** The caller's AbortSignal fired; `cause` holds the signal's reason. */
class AbortError extends TtsError {
    constructor(message, reason) {
        super("aborted", message, { cause: reason });
    }
}
exports.AbortError = AbortError;
/** A bad argument or setting, e.g. a malformed broker URL or an empty text. */
class InvalidArgumentError extends TtsError {
    constructor(message, options) {
        super("invalid_argument", message, options);
    }
}
exports.InvalidArgumentError = InvalidArgumentError;
/** The broker could not be reached within the time allowed. */
class BrokerUnavailableError extends TtsError {
    constructor(message) {
        super("unavailable", message);
    }
}
exports.BrokerUnavailableError = BrokerUnavailableError;
/** Some lines of a processMessageChunks batch failed; the others were written. */
class BatchFailedError extends TtsError {
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
exports.BatchFailedError = BatchFailedError;
