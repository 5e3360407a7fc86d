/**
 * JobTable: the client's unfinished jobs and what it does for them, i.e. PROTOCOL.md section 9 (the retry
 * policy) as code. A job is resubmitted under its own id when the broker restarted or came back, when it went
 * quiet, and after a retryable ERROR (backoff from retryPolicy.ts, RETRY first), until the call's timeout.
 * Each job's promise settles exactly once; whatever comes for it later is dropped.
 */

import { AbortError, BrokerUnavailableError, JobFailedError, ProtocolError, TimeoutError, TtsError } from "./errors.js";
import type { JobStream } from "./jobStream.js";
import { encodeMessage } from "./protocol/codec.js";
import { BYTES_PER_SAMPLE, Command } from "./protocol/constants.js";
import { backoffDelayMs } from "./retryPolicy.js";
import type { ClientStats, Logger, SynthesisResult } from "./types.js";

/** A RESULT body (or RESULT_REPLY's `result`) and its audio as a SynthesisResult. */
export function synthesisResult(body: Record<string, unknown>, audio: Uint8Array): SynthesisResult {
  const channels = body["channels"] as number;
  const sampleRate = body["sample_rate"] as number;
  return {
    jobId: body["job_id"] as string,
    attempt: body["attempt"] as number,
    workerId: body["worker_id"] as string,
    engine: body["engine"] as string,
    model: body["model"] as string,
    sampleRate,
    channels,
    sampleFormat: "s16le",
    numSamples: body["num_samples"] as number,
    genTimeMs: body["gen_time_ms"] as number,
    queueTimeMs: body["queue_time_ms"] as number,
    totalTimeMs: body["total_time_ms"] as number,
    cached: body["cached"] as boolean,
    audio,
    durationS: audio.byteLength / (BYTES_PER_SAMPLE * channels * sampleRate),
  };
}

interface RemoteError {
  code: string;
  message: string;
}

interface PendingJob {
  id: string;
  frames: Uint8Array[];
  stream: JobStream | undefined;
  resolve: (result: SynthesisResult) => void;
  reject: (err: Error) => void;
  lastHeardMs: number;
  /** When the call started (performance.now()). */
  startedMs: number;
  /** Retries since the backoff last restarted (ACCEPTED restarts it). */
  retries: number;
  retryTimer: NodeJS.Timeout | undefined;
  /** The retryable ERROR the job is waiting to retry; cleared by ACCEPTED. */
  lastError: RemoteError | undefined;
  cleanup: () => void;
}

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

export class JobTable {
  private readonly jobs = new Map<string, PendingJob>();
  private retrySeq = 0;

  constructor(private readonly host: JobTableHost, private readonly policy: JobPolicy) {}

  get size(): number {
    return this.jobs.size;
  }

  has(jobId: string): boolean {
    return this.jobs.has(jobId);
  }

  /** Track a job and send its SUBMIT; resolves with its result, rejects with its error. */
  add(req: JobRequest): Promise<SynthesisResult> {
    const { id, signal } = req;
    return new Promise<SynthesisResult>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const onAbort = (): void => this.abandon(id, new AbortError(`job ${id} aborted`, signal?.reason), true);
      const job: PendingJob = {
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
      if (req.timeoutMs > 0) timer = setTimeout(() => this.timeOut(job, req.timeoutMs), req.timeoutMs);
      signal?.addEventListener("abort", onAbort, { once: true });
      this.jobs.set(id, job);
      this.host.stats.submitted += 1;
      this.transmit(job);
    });
  }

  /** ACCEPTED or PARTIAL: the broker has the job. Returns its stream, if any. */
  heard(jobId: string, accepted: boolean): JobStream | undefined {
    const job = this.jobs.get(jobId);
    if (job === undefined) return undefined;
    job.lastHeardMs = performance.now();
    if (accepted) {
      job.lastError = undefined;
      job.retries = 0;
    }
    return job.stream;
  }

  /** RESULT: the job's answer (a duplicate, or one for a job already settled, is dropped). */
  onResult(jobId: string, body: Record<string, unknown>, audio: Uint8Array): void {
    const job = this.jobs.get(jobId);
    if (job === undefined) return;
    const channels = body["channels"] as number;
    if (audio.byteLength % (BYTES_PER_SAMPLE * channels) !== 0) {
      this.settle(job, new ProtocolError(`job ${job.id}: RESULT audio of ${audio.byteLength} bytes is not whole ${channels}-channel s16le frames`));
      return;
    }
    this.settle(job, synthesisResult(body, audio));
  }

  /** ERROR about a job: retry it after a backoff if retryable, else fail it with the remote code. */
  onError(jobId: string, body: Record<string, unknown>): boolean {
    const job = this.jobs.get(jobId);
    if (job === undefined) return false;
    const code = body["code"] as string;
    const message = body["message"] as string;
    const retryable = body["retryable"] as boolean;
    job.lastHeardMs = performance.now();
    if (!retryable || job.retries >= this.policy.maxRetries || this.host.closed()) {
      this.settle(job, new JobFailedError(job.id, code, message, retryable));
      return true;
    }
    const delayMs = backoffDelayMs(job.retries, this.policy.retryBackoffMs, this.policy.retryBackoffMaxMs);
    job.retries += 1;
    job.lastError = { code, message };
    this.host.stats.retried += 1;
    this.host.log.debug(`job ${job.id}: ${code} (${message}), retry ${job.retries} in ${Math.round(delayMs)} ms`);
    clearTimeout(job.retryTimer);
    job.retryTimer = setTimeout(() => {
      job.retryTimer = undefined;
      if (this.jobs.get(job.id) === job) this.resubmit(job, `retry after ${code}`);
    }, delayMs);
    return true;
  }

  /** The broker restarted or answers again after a silence: resubmit every unfinished job, also one waiting
   * for a retry (its error came from a broker that may be gone). */
  resubmitAll(why: string): void {
    if (this.jobs.size > 0) this.host.log.warn(`${why}: resubmitting ${this.jobs.size} unfinished job(s)`);
    for (const job of this.jobs.values()) {
      clearTimeout(job.retryTimer);
      job.retryTimer = undefined;
      this.resubmit(job, why);
    }
  }

  /** Resubmit the jobs the broker has said nothing about for resubmitAfterMs. */
  tick(now: number): void {
    for (const job of this.jobs.values()) {
      if (job.retryTimer === undefined && now - job.lastHeardMs >= this.policy.resubmitAfterMs) {
        this.resubmit(job, `nothing heard for ${Math.round(now - job.lastHeardMs)} ms`);
      }
    }
  }

  /** Give up on a job locally; with cancel, tell the broker to drop it. */
  abandon(jobId: string, err: Error, cancel: boolean): void {
    const job = this.jobs.get(jobId);
    if (job === undefined) return;
    this.settle(job, err);
    if (cancel && !this.host.closed()) this.host.send(encodeMessage(Command.CANCEL, { job_id: jobId })).catch(() => undefined);
  }

  /** Fail (and CANCEL, the broker may come back) every job that has waited limitMs since max(its start,
   * brokerHeardMs): the broker never answered it or went silent. */
  failUnanswered(now: number, brokerHeardMs: number, limitMs: number, error: (what: string) => Error): void {
    for (const job of [...this.jobs.values()]) {
      if (now - Math.max(job.startedMs, brokerHeardMs) >= limitMs) this.abandon(job.id, error(`job ${job.id}`), true);
    }
  }

  failAll(err: Error): void {
    for (const job of [...this.jobs.values()]) this.settle(job, err);
  }

  /** The call's timeout: fail with the retryable error the job was waiting to retry (no CANCEL: the broker
   * holds no live job), else with TimeoutError and a CANCEL. */
  private timeOut(job: PendingJob, timeoutMs: number): void {
    const last = job.lastError;
    if (last !== undefined) {
      this.abandon(job.id, new JobFailedError(job.id, last.code, `${last.message} (gave up at the call's timeout)`, true), false);
    } else {
      this.abandon(job.id, new TimeoutError(`job ${job.id} timed out after ${timeoutMs} ms`, timeoutMs), true);
    }
  }

  private resubmit(job: PendingJob, why: string): void {
    this.host.log.debug(`job ${job.id}: resubmitting (${why})`);
    this.host.stats.resubmitted += 1;
    if (job.lastError !== undefined) {
      // A broker may hold the job as failed with that retryable error (a journal keeps it across a restart)
      // and answer a plain SUBMIT with the same error. RETRY requeues such a job (or fails harmlessly, answered
      // by a req_id nobody waits for); the SUBMIT behind it, on the same socket, attaches to it or creates it.
      const retry = encodeMessage(Command.RETRY, { req_id: `retry-${++this.retrySeq}`, job_id: job.id });
      this.host.send(retry).catch(() => undefined);
    }
    this.transmit(job);
  }

  /** Send (or resend: same job id, so the broker attaches instead of duplicating) a job's SUBMIT. */
  private transmit(job: PendingJob): void {
    job.lastHeardMs = performance.now();
    this.host.send(job.frames).catch((err: unknown) => {
      const error = err instanceof TtsError ? err : new BrokerUnavailableError(`sending job ${job.id} failed: ${String(err)}`);
      this.settle(job, error);
    });
  }

  private settle(job: PendingJob, outcome: SynthesisResult | Error): void {
    if (this.jobs.get(job.id) !== job) return;
    this.jobs.delete(job.id);
    job.cleanup();
    if (outcome instanceof Error) {
      this.host.stats.failed += 1;
      job.stream?.fail(outcome);
      job.reject(outcome);
    } else {
      this.host.stats.completed += 1;
      job.stream?.finish(outcome);
      job.resolve(outcome);
    }
  }
}
