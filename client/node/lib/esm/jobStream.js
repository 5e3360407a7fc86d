/** JobStream: a streamed job's audio as an async iterable of chunks, plus its final result. */
/**
 * Chunks arrive from PARTIAL messages and are delivered in order. A retried job restarts its partials
 * (seq 0, higher attempt): chunks below the count already delivered are skipped. When RESULT arrives, any
 * audio the partials did not deliver (missed or skipped chunks) is delivered from the whole utterance, so
 * the concatenated chunks always equal the result's audio for deterministic engines.
 */
export class JobStream {
    onEarlyExit;
    jobId;
    /** The final result (whole utterance and metadata); rejects like the iteration does. */
    result;
    entries = [];
    waiter;
    delivered = 0;
    deliveredBytes = 0;
    attempt = 0;
    gap = false;
    finished = false;
    iterating = false;
    resolveResult;
    rejectResult;
    constructor(jobId, onEarlyExit) {
        this.onEarlyExit = onEarlyExit;
        this.jobId = jobId;
        this.result = new Promise((resolve, reject) => {
            this.resolveResult = resolve;
            this.rejectResult = reject;
        });
        this.result.catch(() => undefined); // a consumer that only iterates must not see an unhandled rejection
    }
    /** A PARTIAL for this job (called by the client). */
    pushPartial(attempt, seq, pcm, sampleRate, channels) {
        if (this.finished || attempt < this.attempt)
            return;
        if (attempt > this.attempt)
            this.attempt = attempt;
        if (this.gap || seq < this.delivered)
            return; // already delivered by an earlier attempt
        if (seq > this.delivered) {
            this.gap = true; // a chunk went missing: the rest comes from RESULT
            return;
        }
        this.deliver(pcm, attempt, sampleRate, channels);
    }
    /** The RESULT (called by the client): deliver what is missing, then end. */
    finish(result) {
        if (this.finished)
            return;
        if (result.audio.byteLength > this.deliveredBytes) {
            this.deliver(result.audio.subarray(this.deliveredBytes), result.attempt, result.sampleRate, result.channels);
        }
        this.finished = true;
        this.entries.push({ end: true });
        this.wake();
        this.resolveResult(result);
    }
    /** End the stream with an error (called by the client). */
    fail(err) {
        if (this.finished)
            return;
        this.finished = true;
        this.entries.push({ error: err });
        this.wake();
        this.rejectResult(err);
    }
    async *[Symbol.asyncIterator]() {
        if (this.iterating)
            throw new Error(`job ${this.jobId}: a JobStream can be iterated only once`);
        this.iterating = true;
        let done = false;
        try {
            for (;;) {
                const entry = this.entries.shift();
                if (entry === undefined) {
                    await new Promise((resolve) => (this.waiter = resolve));
                    continue;
                }
                if ("chunk" in entry)
                    yield entry.chunk;
                else if ("end" in entry) {
                    done = true;
                    return;
                }
                else {
                    done = true;
                    throw entry.error;
                }
            }
        }
        finally {
            // The consumer left the loop early (break/throw): it no longer wants the job.
            if (!done && !this.finished)
                this.onEarlyExit();
        }
    }
    deliver(pcm, attempt, sampleRate, channels) {
        this.entries.push({
            chunk: { jobId: this.jobId, index: this.delivered, attempt, pcm, sampleRate, channels, sampleFormat: "s16le" },
        });
        this.delivered += 1;
        this.deliveredBytes += pcm.byteLength;
        this.wake();
    }
    wake() {
        const waiter = this.waiter;
        this.waiter = undefined;
        waiter?.();
    }
}
