"use strict";
/**
 * JobTable: the client's unfinished jobs and what it does for them, i.e. PROTOCOL.md section 9 (the retry
 * policy) as code. A job is resubmitted under its own id when the broker restarted or came back, when it went
 * quiet, and after a retryable ERROR (backoff from retryPolicy.ts, RETRY first), until the call's timeout.
 * Each job's promise settles exactly once; whatever comes for it later is dropped.
 */
Object.defineProperty(exports, "__esModule", { value: true });
exports.JobTable = void 0;
exports.synthesisResult = synthesisResult;
const errors_js_1 = require("./errors.js");
const codec_js_1 = require("./protocol/codec.js");
const constants_js_1 = require("./protocol/constants.js");
const retryPolicy_js_1 = require("./retryPolicy.js");
/** A RESULT body (or RESULT_REPLY's `result`) and its audio as a SynthesisResult. */
function synthesisResult(body, audio) {
    const channels = body["channels"];
    const sampleRate = body["sample_rate"];
    return {
        jobId: body["job_id"],
        attempt: body["attempt"],
        workerId: body["worker_id"],
        engine: body["engine"],
        model: body["model"],
        sampleRate,
        channels,
        sampleFormat: "s16le",
        numSamples: body["num_samples"],
        genTimeMs: body["gen_time_ms"],
        queueTimeMs: body["queue_time_ms"],
        totalTimeMs: body["total_time_ms"],
        cached: body["cached"],
        audio,
        durationS: audio.byteLength / (constants_js_1.BYTES_PER_SAMPLE * channels * sampleRate),
    };
}
class JobTable {
    host;
    policy;
    jobs = new Map();
    retrySeq = 0;
    constructor(host, policy) {
        this.host = host;
        this.policy = policy;
    }
    get size() {
        return this.jobs.size;
    }
    has(jobId) {
        return this.jobs.has(jobId);
    }
    /** Track a job and send its SUBMIT; resolves with its result, rejects with its error. */
    add(req) {
        const { id, signal } = req;
        return new Promise((resolve, reject) => {
            let timer;
            const onAbort = () => this.abandon(id, new errors_js_1.AbortError(`job ${id} aborted`, signal?.reason), true);
            const job = {
                id,
                frames: req.frames,
                stream: req.stream,
                resolve,
                reject,
                lastHeardMs: performance.now(),
                startedMs: performance.now(),
                retries: 0,
                retryTimer: undefined,
                lastError: undefined,
                cleanup: () => {
                    clearTimeout(timer);
                    clearTimeout(job.retryTimer);
                    signal?.removeEventListener("abort", onAbort);
                },
            };
            if (req.timeoutMs > 0)
                timer = setTimeout(() => this.timeOut(job, req.timeoutMs), req.timeoutMs);
            signal?.addEventListener("abort", onAbort, { once: true });
            this.jobs.set(id, job);
            this.host.stats.submitted += 1;
            this.transmit(job);
        });
    }
    /** ACCEPTED or PARTIAL: the broker has the job. Returns its stream, if any. */
    heard(jobId, accepted) {
        const job = this.jobs.get(jobId);
        if (job === undefined)
            return undefined;
        job.lastHeardMs = performance.now();
        if (accepted) {
            job.lastError = undefined;
            job.retries = 0;
        }
        return job.stream;
    }
    /** RESULT: the job's answer (a duplicate, or one for a job already settled, is dropped). */
    onResult(jobId, body, audio) {
        const job = this.jobs.get(jobId);
        if (job === undefined)
            return;
        const channels = body["channels"];
        if (audio.byteLength % (constants_js_1.BYTES_PER_SAMPLE * channels) !== 0) {
            this.settle(job, new errors_js_1.ProtocolError(`job ${job.id}: RESULT audio of ${audio.byteLength} bytes is not whole ${channels}-channel s16le frames`));
            return;
        }
        this.settle(job, synthesisResult(body, audio));
    }
    /** ERROR about a job: retry it after a backoff if retryable, else fail it with the remote code. */
    onError(jobId, body) {
        const job = this.jobs.get(jobId);
        if (job === undefined)
            return false;
        const code = body["code"];
        const message = body["message"];
        const retryable = body["retryable"];
        job.lastHeardMs = performance.now();
        if (!retryable || job.retries >= this.policy.maxRetries || this.host.closed()) {
            this.settle(job, new errors_js_1.JobFailedError(job.id, code, message, retryable));
            return true;
        }
        const delayMs = (0, retryPolicy_js_1.backoffDelayMs)(job.retries, this.policy.retryBackoffMs, this.policy.retryBackoffMaxMs);
        job.retries += 1;
        job.lastError = { code, message };
        this.host.stats.retried += 1;
        this.host.log.debug(`job ${job.id}: ${code} (${message}), retry ${job.retries} in ${Math.round(delayMs)} ms`);
        clearTimeout(job.retryTimer);
        job.retryTimer = setTimeout(() => {
            job.retryTimer = undefined;
            if (this.jobs.get(job.id) === job)
                this.resubmit(job, `retry after ${code}`);
        }, delayMs);
        return true;
    }
    /** The broker restarted or answers again after a silence: resubmit every unfinished job, also one waiting
     * for a retry (its error came from a broker that may be gone). */
    resubmitAll(why) {
        if (this.jobs.size > 0)
            this.host.log.warn(`${why}: resubmitting ${this.jobs.size} unfinished job(s)`);
        for (const job of this.jobs.values()) {
            clearTimeout(job.retryTimer);
            job.retryTimer = undefined;
            this.resubmit(job, why);
        }
    }
    /** Resubmit the jobs the broker has said nothing about for resubmitAfterMs. */
    tick(now) {
        for (const job of this.jobs.values()) {
            if (job.retryTimer === undefined && now - job.lastHeardMs >= this.policy.resubmitAfterMs) {
                this.resubmit(job, `nothing heard for ${Math.round(now - job.lastHeardMs)} ms`);
            }
        }
    }
    /** Give up on a job locally; with cancel, tell the broker to drop it. */
    abandon(jobId, err, cancel) {
        const job = this.jobs.get(jobId);
        if (job === undefined)
            return;
        this.settle(job, err);
        if (cancel && !this.host.closed())
            this.host.send((0, codec_js_1.encodeMessage)(constants_js_1.Command.CANCEL, { job_id: jobId })).catch(() => undefined);
    }
    /** Fail (and CANCEL, the broker may come back) every job that has waited limitMs since max(its start,
     * brokerHeardMs): the broker never answered it or went silent. */
    failUnanswered(now, brokerHeardMs, limitMs, error) {
        for (const job of [...this.jobs.values()]) {
            if (now - Math.max(job.startedMs, brokerHeardMs) >= limitMs)
                this.abandon(job.id, error(`job ${job.id}`), true);
        }
    }
    failAll(err) {
        for (const job of [...this.jobs.values()])
            this.settle(job, err);
    }
    /** The call's timeout: fail with the retryable error the job was waiting to retry (no CANCEL: the broker
     * holds no live job), else with TimeoutError and a CANCEL. */
    timeOut(job, timeoutMs) {
        const last = job.lastError;
        if (last !== undefined) {
            this.abandon(job.id, new errors_js_1.JobFailedError(job.id, last.code, `${last.message} (gave up at the call's timeout)`, true), false);
        }
        else {
            this.abandon(job.id, new errors_js_1.TimeoutError(`job ${job.id} timed out after ${timeoutMs} ms`, timeoutMs), true);
        }
    }
    resubmit(job, why) {
        this.host.log.debug(`job ${job.id}: resubmitting (${why})`);
        this.host.stats.resubmitted += 1;
        if (job.lastError !== undefined) {
            // A broker may hold the job as failed with that retryable error (a journal keeps it across a restart)
            // and answer a plain SUBMIT with the same error. RETRY requeues such a job (or fails harmlessly, answered
            // by a req_id nobody waits for); the SUBMIT behind it, on the same socket, attaches to it or creates it.
            const retry = (0, codec_js_1.encodeMessage)(constants_js_1.Command.RETRY, { req_id: `retry-${++this.retrySeq}`, job_id: job.id });
            this.host.send(retry).catch(() => undefined);
        }
        this.transmit(job);
    }
    /** Send (or resend: same job id, so the broker attaches instead of duplicating) a job's SUBMIT. */
    transmit(job) {
        job.lastHeardMs = performance.now();
        this.host.send(job.frames).catch((err) => {
            const error = err instanceof errors_js_1.TtsError ? err : new errors_js_1.BrokerUnavailableError(`sending job ${job.id} failed: ${String(err)}`);
            this.settle(job, error);
        });
    }
    settle(job, outcome) {
        if (this.jobs.get(job.id) !== job)
            return;
        this.jobs.delete(job.id);
        job.cleanup();
        if (outcome instanceof Error) {
            this.host.stats.failed += 1;
            job.stream?.fail(outcome);
            job.reject(outcome);
        }
        else {
            this.host.stats.completed += 1;
            job.stream?.finish(outcome);
            job.resolve(outcome);
        }
    }
}
exports.JobTable = JobTable;
