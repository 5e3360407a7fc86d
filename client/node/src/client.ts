/**
 * TtsClient: one DEALER socket to the broker's frontend, one receive loop routing replies by job id or
 * request id, one serialised send queue.
 *
 * Reliability (PROTOCOL.md section 3): job ids are idempotency keys, so the client resubmits a job with the
 * same id whenever it may have been lost: after a broker restart (PING every pingIntervalMs; a new broker_id
 * in PONG, or PONGs coming back after a silence), when the broker has said nothing about a job for
 * resubmitAfterMs, and after a retryable ERROR (with exponential backoff and jitter).
 *
 * An idle client does not keep the Node process alive: the receive loop runs only while jobs or requests are
 * pending (it polls with a 1 s receive timeout), and its timer is unref'd. close() it to free the socket.
 */

import { Dealer } from "zeromq";

import {
  AbortError,
  BrokerUnavailableError,
  ClosedError,
  InvalidArgumentError,
  JobFailedError,
  ProtocolError,
  RequestFailedError,
  TimeoutError,
  TtsError,
} from "./errors.js";
import { JobStream } from "./jobStream.js";
import { makeJobId } from "./naming.js";
import { decodeMessage, encodeMessage, MalformedMessageError, type Message } from "./protocol/codec.js";
import { BYTES_PER_SAMPLE, CLIENT_HEADER, Command, DEFAULT_FRONTEND, type JobState } from "./protocol/constants.js";
import { SendQueue } from "./sendQueue.js";
import type {
  ClientStats,
  JobView,
  Logger,
  PongInfo,
  RequestOptions,
  StatusView,
  SynthesisResult,
  SynthesizeOptions,
  TtsClientOptions,
  VoiceValue,
} from "./types.js";

const RECEIVE_POLL_MS = 1000;
const BROKER_LOST_PINGS = 3;
const URL_PATTERN = /^(tcp|ipc|inproc|ws|wss|tipc|vmci|udp|pgm|epgm):\/\/\S+$/;

interface PendingJob {
  id: string;
  frames: Uint8Array[];
  stream: JobStream | undefined;
  resolve: (result: SynthesisResult) => void;
  reject: (err: Error) => void;
  lastHeardMs: number;
  retries: number;
  retryTimer: NodeJS.Timeout | undefined;
  cleanup: () => void;
}

interface PendingRequest {
  expect: number;
  resolve: (msg: Message) => void;
  reject: (err: Error) => void;
  cleanup: () => void;
}

/** The broker URL the clients use: TTS_BROKER_URL, else tcp://127.0.0.1:5555. */
export function defaultBrokerUrl(env: NodeJS.ProcessEnv = process.env): string {
  return env["TTS_BROKER_URL"]?.trim() || DEFAULT_FRONTEND;
}

/** A client of the TTS broker. Safe to share: every method may be called concurrently. */
export class TtsClient {
  readonly brokerUrl: string;
  readonly stats: ClientStats = {
    submitted: 0,
    resubmitted: 0,
    retried: 0,
    completed: 0,
    failed: 0,
    brokerRestarts: 0,
    malformed: 0,
  };

  private readonly opts: Required<Omit<TtsClientOptions, "brokerUrl" | "routingId" | "logger">>;
  private readonly routingId: string | undefined;
  private readonly log: Logger;
  private socket: Dealer | undefined;
  private sendQueue: SendQueue | undefined;
  private readonly pendingById = new Map<string, PendingJob>();
  private readonly requests = new Map<string, PendingRequest>();
  private receiving: Promise<void> | undefined;
  private ticker: NodeJS.Timeout | undefined;
  private closing: Promise<void> | undefined;
  private reqCounter = 0;
  private brokerId: string | undefined;
  private brokerLost = false;
  private autoPingId: string | undefined;
  private autoPingSentMs = 0;
  private lastAutoPingMs = -Infinity;

  /** Throws InvalidArgumentError at once for a malformed broker URL; connects on first use. */
  constructor(options: TtsClientOptions = {}) {
    this.brokerUrl = options.brokerUrl ?? defaultBrokerUrl();
    if (!URL_PATTERN.test(this.brokerUrl)) {
      throw new InvalidArgumentError(
        `malformed broker URL ${JSON.stringify(this.brokerUrl)}: expected e.g. tcp://127.0.0.1:5555 or ipc:///path`,
      );
    }
    this.routingId = options.routingId;
    this.log = options.logger ?? { warn: (m) => console.warn(`tts-client: ${m}`), debug: () => undefined };
    this.opts = {
      requestTimeoutMs: options.requestTimeoutMs ?? 5000,
      jobTimeoutMs: options.jobTimeoutMs ?? 300_000,
      pingIntervalMs: options.pingIntervalMs ?? 1000,
      resubmitAfterMs: options.resubmitAfterMs ?? 5000,
      maxRetries: options.maxRetries ?? 10,
      retryBackoffMs: options.retryBackoffMs ?? 200,
      retryBackoffMaxMs: options.retryBackoffMaxMs ?? 5000,
      sendHighWaterMark: options.sendHighWaterMark ?? 100_000,
    };
  }

  /** A client connected to the broker; with waitMs, rejects with BrokerUnavailableError if no PONG comes. */
  static async connect(options: TtsClientOptions & { waitMs?: number } = {}): Promise<TtsClient> {
    const client = new TtsClient(options);
    try {
      return await client.connect(options.waitMs === undefined ? {} : { waitMs: options.waitMs });
    } catch (err) {
      await client.close();
      throw err;
    }
  }

  /**
   * Open the socket (ZeroMQ connects in the background and reconnects by itself). With waitMs, also wait
   * until the broker answers a PING.
   */
  async connect(options: { waitMs?: number } = {}): Promise<this> {
    this.ensureSocket();
    if (options.waitMs !== undefined) {
      try {
        await this.ping({ timeoutMs: options.waitMs });
      } catch (err) {
        if (err instanceof TimeoutError) {
          throw new BrokerUnavailableError(`no answer from the broker at ${this.brokerUrl} within ${options.waitMs} ms`);
        }
        throw err;
      }
    }
    return this;
  }

  get isClosed(): boolean {
    return this.closing !== undefined;
  }

  /** Jobs submitted and not finished. */
  get pendingJobs(): number {
    return this.pendingById.size;
  }

  /** Synthesise `text`; resolves with the whole utterance (PCM) and its metadata. */
  synthesize(text: string, options: SynthesizeOptions = {}): Promise<SynthesisResult> {
    return this.submit(text, options, undefined);
  }

  /**
   * Synthesise `text` and deliver audio chunks while the engine produces them. Iterate the returned stream;
   * `.result` gives the final result. Leaving the loop early cancels the job.
   */
  stream(text: string, options: SynthesizeOptions = {}): JobStream {
    const jobId = options.jobId ?? makeJobId(options.jobIdPrefix ?? "stream");
    const stream = new JobStream(jobId, () => void this.cancel(jobId).catch(() => undefined));
    this.submit(text, { ...options, jobId }, stream).catch((err: Error) => stream.fail(err));
    return stream;
  }

  /** Ask the broker to cancel a job; its pending call then rejects with JobFailedError (code cancelled). */
  async cancel(jobId: string): Promise<void> {
    await this.sendFrames(encodeMessage(Command.CANCEL, { job_id: jobId }));
  }

  /** The broker's status view (queue, jobs, workers). */
  async status(options: RequestOptions = {}): Promise<StatusView> {
    const msg = await this.request(Command.BROKER_STATUS, {}, Command.BROKER_STATUS_REPLY, options);
    return msg.body["status"] as StatusView;
  }

  /** The broker's view of one job. */
  async jobStatus(jobId: string, options: RequestOptions = {}): Promise<JobView> {
    const msg = await this.request(Command.JOB_STATUS, { job_id: jobId }, Command.JOB_STATUS_REPLY, options);
    return msg.body["job"] as JobView;
  }

  /** Recent jobs (live and retained), newest first; state "failed" gives the dead-letter list. */
  async jobs(filter: { state?: JobState | null; limit?: number } = {}, options: RequestOptions = {}): Promise<JobView[]> {
    const body = { state: filter.state ?? null, limit: filter.limit ?? 50 };
    const msg = await this.request(Command.JOBS, body, Command.JOBS_REPLY, options);
    return msg.body["jobs"] as JobView[];
  }

  /**
   * Put a failed or cancelled job back in the broker's queue (same id, attempts start again); resolves with
   * its new view. To wait for its result, synthesize() again with the same jobId: that attaches to it.
   */
  async retry(jobId: string, options: RequestOptions = {}): Promise<JobView> {
    const msg = await this.request(Command.RETRY, { job_id: jobId }, Command.JOB_STATUS_REPLY, options);
    return msg.body["job"] as JobView;
  }

  /** Round trip to the broker. */
  async ping(options: RequestOptions = {}): Promise<PongInfo> {
    const t0 = performance.now();
    const msg = await this.request(Command.PING, {}, Command.PONG, options);
    return { brokerId: msg.body["broker_id"] as string, timeMs: msg.body["time_ms"] as number, rttMs: performance.now() - t0 };
  }

  /** Hot-reload the workers serving `model` (null = all) with `options`; resolves with how many were told. */
  async reload(model: string | null, options: Record<string, VoiceValue> = {}, request: RequestOptions = {}): Promise<number> {
    const msg = await this.request(Command.RELOAD, { model, options }, Command.RELOAD_REPLY, request);
    return msg.body["workers"] as number;
  }

  /** Close the socket and reject everything pending with ClosedError. Idempotent. */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  // ---- jobs -------------------------------------------------------------------------------------------

  private submit(text: string, options: SynthesizeOptions, stream: JobStream | undefined): Promise<SynthesisResult> {
    let frames: Uint8Array[];
    let jobId: string;
    try {
      this.ensureSocket();
      jobId = options.jobId ?? makeJobId(options.jobIdPrefix ?? "job");
      if (this.pendingById.has(jobId)) throw new InvalidArgumentError(`job ${jobId} is already pending in this client`);
      frames = encodeMessage(Command.SUBMIT, {
        job_id: jobId,
        text,
        speaker: options.speaker ?? null,
        model: options.model ?? null,
        priority: options.priority ?? "normal",
        deadline_ms: options.deadlineMs ?? 0,
        timeout_ms: options.attemptTimeoutMs ?? 0,
        stream: stream !== undefined,
        voice: options.voice ?? {},
        cache: options.cache ?? null,
      });
    } catch (err) {
      return Promise.reject(err instanceof ProtocolError ? new InvalidArgumentError(err.message, { cause: err }) : err);
    }
    const signal = options.signal;
    if (signal?.aborted) return Promise.reject(new AbortError(`job ${jobId} aborted before submission`, signal.reason));
    const timeoutMs = options.timeoutMs ?? this.opts.jobTimeoutMs;

    return new Promise<SynthesisResult>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const onAbort = (): void => this.abandon(jobId, new AbortError(`job ${jobId} aborted`, signal?.reason));
      const job: PendingJob = {
        id: jobId,
        frames,
        stream,
        resolve,
        reject,
        lastHeardMs: performance.now(),
        retries: 0,
        retryTimer: undefined,
        cleanup: () => {
          clearTimeout(timer);
          clearTimeout(job.retryTimer);
          signal?.removeEventListener("abort", onAbort);
        },
      };
      if (timeoutMs > 0) {
        timer = setTimeout(
          () => this.abandon(jobId, new TimeoutError(`job ${jobId} timed out after ${timeoutMs} ms`, timeoutMs)),
          timeoutMs,
        );
      }
      signal?.addEventListener("abort", onAbort, { once: true });
      this.pendingById.set(jobId, job);
      this.stats.submitted += 1;
      this.ensureReceiving();
      this.transmit(job);
      // Learn the broker's id right away (not at the next tick), so a restart soon after is recognised.
      const interval = this.opts.pingIntervalMs;
      if (interval > 0 && this.autoPingId === undefined && performance.now() - this.lastAutoPingMs > interval) {
        this.sendAutoPing();
      }
    });
  }

  /** Send (or resend: same job id, so the broker attaches instead of duplicating) a job's SUBMIT. */
  private transmit(job: PendingJob): void {
    job.lastHeardMs = performance.now();
    this.sendQueue!.send(job.frames).catch((err: unknown) => {
      const error = err instanceof TtsError ? err : new BrokerUnavailableError(`sending job ${job.id} failed: ${String(err)}`);
      this.settle(job, error);
    });
  }

  private resubmit(job: PendingJob, why: string): void {
    this.log.debug(`job ${job.id}: resubmitting (${why})`);
    this.stats.resubmitted += 1;
    this.transmit(job);
  }

  /** Give up on a job locally (timeout, abort) and tell the broker to drop it. */
  private abandon(jobId: string, err: Error): void {
    const job = this.pendingById.get(jobId);
    if (job === undefined) return;
    this.settle(job, err);
    if (!this.isClosed) this.cancel(jobId).catch(() => undefined);
  }

  private settle(job: PendingJob, outcome: SynthesisResult | Error): void {
    if (this.pendingById.get(job.id) !== job) return;
    this.pendingById.delete(job.id);
    job.cleanup();
    if (outcome instanceof Error) {
      this.stats.failed += 1;
      job.stream?.fail(outcome);
      job.reject(outcome);
    } else {
      this.stats.completed += 1;
      job.stream?.finish(outcome);
      job.resolve(outcome);
    }
  }

  private onJobError(job: PendingJob, body: Record<string, unknown>): void {
    const code = body["code"] as string;
    const message = body["message"] as string;
    const retryable = body["retryable"] as boolean;
    if (retryable && job.retries < this.opts.maxRetries && !this.isClosed) {
      job.retries += 1;
      this.stats.retried += 1;
      const ceiling = Math.min(this.opts.retryBackoffMaxMs, this.opts.retryBackoffMs * 2 ** (job.retries - 1));
      const delayMs = ceiling / 2 + Math.random() * (ceiling / 2);
      this.log.debug(`job ${job.id}: ${code} (${message}), retry ${job.retries} in ${Math.round(delayMs)} ms`);
      clearTimeout(job.retryTimer);
      job.retryTimer = setTimeout(() => {
        job.retryTimer = undefined;
        if (this.pendingById.get(job.id) !== job) return;
        // A job that failed with a retryable code may be retained (even journaled) by the broker, and then a
        // SUBMIT would only fetch the same error again. RETRY requeues such a job under its id; for a job the
        // broker does not know, or one still live, it answers an error we ignore. The SUBMIT behind it (same
        // socket, so it arrives second) creates the job or attaches to the requeued one.
        this.sendQueue!.send(encodeMessage(Command.RETRY, { req_id: `x${++this.reqCounter}`, job_id: job.id })).catch(() => undefined);
        this.resubmit(job, `retry after ${code}`);
      }, delayMs);
      return;
    }
    this.settle(job, new JobFailedError(job.id, code, message, retryable));
  }

  private onResult(job: PendingJob, body: Record<string, unknown>, audio: Uint8Array): void {
    const channels = body["channels"] as number;
    const sampleRate = body["sample_rate"] as number;
    if (audio.byteLength % (BYTES_PER_SAMPLE * channels) !== 0) {
      this.settle(job, new ProtocolError(`job ${job.id}: RESULT audio of ${audio.byteLength} bytes is not whole ${channels}-channel s16le frames`));
      return;
    }
    this.settle(job, {
      jobId: job.id,
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
    });
  }

  // ---- requests ---------------------------------------------------------------------------------------

  private request(command: number, body: Record<string, unknown>, expect: number, options: RequestOptions): Promise<Message> {
    let frames: Uint8Array[];
    const reqId = `r${++this.reqCounter}`;
    try {
      this.ensureSocket();
      frames = encodeMessage(command, { req_id: reqId, ...body });
    } catch (err) {
      return Promise.reject(err instanceof ProtocolError ? new InvalidArgumentError(err.message, { cause: err }) : err);
    }
    const { signal } = options;
    if (signal?.aborted) return Promise.reject(new AbortError("request aborted", signal.reason));
    const timeoutMs = options.timeoutMs ?? this.opts.requestTimeoutMs;
    return new Promise<Message>((resolve, reject) => {
      const fail = (err: Error): void => {
        if (this.requests.get(reqId) === entry) {
          this.requests.delete(reqId);
          entry.cleanup();
          reject(err);
        }
      };
      const onAbort = (): void => fail(new AbortError("request aborted", signal?.reason));
      const timer = setTimeout(() => fail(new TimeoutError(`no answer from the broker at ${this.brokerUrl} within ${timeoutMs} ms`, timeoutMs)), timeoutMs);
      const entry: PendingRequest = {
        expect,
        resolve,
        reject,
        cleanup: () => {
          clearTimeout(timer);
          signal?.removeEventListener("abort", onAbort);
        },
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.requests.set(reqId, entry);
      this.ensureReceiving();
      this.sendQueue!.send(frames).catch((err: unknown) => fail(err instanceof Error ? err : new Error(String(err))));
    });
  }

  /** Settle a pending request with the broker's reply (or an error about it). */
  private answer(reqId: string, msg: Message | Error): void {
    const entry = this.requests.get(reqId);
    if (entry === undefined) return; // timed out or aborted already
    this.requests.delete(reqId);
    entry.cleanup();
    if (msg instanceof Error) {
      entry.reject(msg);
    } else if (msg.command === Command.ERROR) {
      entry.reject(new RequestFailedError(msg.body["code"] as string, msg.body["message"] as string, msg.body["retryable"] as boolean));
    } else if (msg.command !== entry.expect) {
      entry.reject(new ProtocolError(`broker answered request ${reqId} with ${msg.name}`));
    } else {
      entry.resolve(msg);
    }
  }

  // ---- socket, receive loop, liveness -------------------------------------------------------------------

  private ensureSocket(): void {
    if (this.isClosed) throw new ClosedError();
    if (this.socket !== undefined) return;
    const socket = new Dealer({
      linger: 0,
      sendHighWaterMark: this.opts.sendHighWaterMark,
      receiveHighWaterMark: 0,
      receiveTimeout: RECEIVE_POLL_MS,
      ...(this.routingId === undefined ? {} : { routingId: this.routingId }),
    });
    try {
      socket.connect(this.brokerUrl);
    } catch (err) {
      socket.close();
      throw new InvalidArgumentError(`cannot connect to ${this.brokerUrl}: ${(err as Error).message}`, { cause: err });
    }
    this.socket = socket;
    this.sendQueue = new SendQueue(socket);
    this.ticker = setInterval(() => this.tick(), this.opts.pingIntervalMs > 0 ? this.opts.pingIntervalMs : 1000);
    this.ticker.unref();
  }

  private hasWork(): boolean {
    return this.pendingById.size > 0 || this.requests.size > 0;
  }

  private ensureReceiving(): void {
    if (this.receiving !== undefined || this.isClosed || this.socket === undefined) return;
    this.receiving = this.receiveLoop(this.socket).finally(() => {
      this.receiving = undefined;
      if (this.hasWork()) this.ensureReceiving(); // work registered while the loop was stopping
    });
  }

  private async receiveLoop(socket: Dealer): Promise<void> {
    while (!this.isClosed) {
      let frames: Uint8Array[];
      try {
        frames = await socket.receive();
      } catch (err) {
        if (this.isClosed) return;
        if ((err as { code?: string }).code === "EAGAIN") {
          if (!this.hasWork()) return; // idle: stop, so the process may exit
          continue;
        }
        this.log.warn(`receive failed: ${String(err)}`);
        return;
      }
      this.dispatch(frames);
      if (!this.hasWork()) return;
    }
  }

  private dispatch(frames: Uint8Array[]): void {
    let msg: Message;
    try {
      msg = decodeMessage(frames, CLIENT_HEADER, false);
    } catch (err) {
      this.onMalformed(err as MalformedMessageError);
      return;
    }
    const body = msg.body;
    const job = typeof body["job_id"] === "string" ? this.pendingById.get(body["job_id"]) : undefined;
    switch (msg.command) {
      case Command.ACCEPTED:
      case Command.PARTIAL:
        if (job === undefined) return;
        job.lastHeardMs = performance.now();
        if (msg.command === Command.PARTIAL) {
          job.stream?.pushPartial(body["attempt"] as number, body["seq"] as number, msg.payload!, body["sample_rate"] as number, body["channels"] as number);
        }
        return;
      case Command.RESULT:
        if (job !== undefined) this.onResult(job, body, msg.payload!);
        return;
      case Command.ERROR:
        if (typeof body["req_id"] === "string" && this.requests.has(body["req_id"])) this.answer(body["req_id"], msg);
        else if (job !== undefined) this.onJobError(job, body);
        else if (body["job_id"] === null && body["req_id"] === null) this.log.warn(`broker error: ${String(body["code"])}: ${String(body["message"])}`);
        return;
      case Command.PONG:
        this.onPong(body["req_id"] as string, body["broker_id"] as string);
        this.answer(body["req_id"] as string, msg);
        return;
      default:
        this.answer(body["req_id"] as string, msg);
    }
  }

  private onMalformed(err: MalformedMessageError): void {
    this.stats.malformed += 1;
    this.log.warn(`malformed message from the broker: ${err.message}`);
    const job = err.jobId === undefined ? undefined : this.pendingById.get(err.jobId);
    if (job !== undefined) this.settle(job, err);
    else if (err.reqId !== undefined && this.requests.has(err.reqId)) this.answer(err.reqId, err);
  }

  private onPong(reqId: string, brokerId: string): void {
    if (reqId === this.autoPingId) {
      this.autoPingId = undefined;
      this.autoPingSentMs = 0;
    }
    const restarted = this.brokerId !== undefined && brokerId !== this.brokerId;
    if (restarted || this.brokerLost) {
      if (restarted) this.stats.brokerRestarts += 1;
      const why = restarted ? `broker restarted (${this.brokerId} -> ${brokerId})` : "broker answers again";
      this.log.warn(`${why}: resubmitting ${this.pendingById.size} unfinished job(s)`);
      for (const job of this.pendingById.values()) if (job.retryTimer === undefined) this.resubmit(job, why);
    }
    this.brokerId = brokerId;
    this.brokerLost = false;
  }

  /** Runs every pingIntervalMs: liveness PING while jobs are pending, resubmission of silent jobs. */
  private tick(): void {
    if (this.pendingById.size === 0 || this.isClosed) return;
    const now = performance.now();
    const interval = this.opts.pingIntervalMs;
    if (interval > 0) {
      if (this.autoPingId !== undefined && now - this.autoPingSentMs > BROKER_LOST_PINGS * interval) {
        if (!this.brokerLost) this.log.warn(`no PONG from ${this.brokerUrl} for ${Math.round(now - this.autoPingSentMs)} ms`);
        this.brokerLost = true;
        this.autoPingId = undefined;
      }
      if (this.autoPingId === undefined) this.sendAutoPing();
    }
    for (const job of this.pendingById.values()) {
      if (job.retryTimer === undefined && now - job.lastHeardMs > this.opts.resubmitAfterMs) {
        this.resubmit(job, `nothing heard for ${Math.round(now - job.lastHeardMs)} ms`);
      }
    }
  }

  /** The liveness PING; its PONG tells whether the broker restarted. */
  private sendAutoPing(): void {
    this.autoPingId = `p${++this.reqCounter}`;
    this.autoPingSentMs = performance.now();
    this.lastAutoPingMs = this.autoPingSentMs;
    this.sendQueue!.send(encodeMessage(Command.PING, { req_id: this.autoPingId })).catch(() => undefined);
  }

  private async sendFrames(frames: Uint8Array[]): Promise<void> {
    this.ensureSocket();
    await this.sendQueue!.send(frames);
  }

  private async shutdown(): Promise<void> {
    clearInterval(this.ticker);
    const err = new ClosedError();
    for (const job of [...this.pendingById.values()]) this.settle(job, err);
    for (const entry of this.requests.values()) {
      entry.cleanup();
      entry.reject(err);
    }
    this.requests.clear();
    this.sendQueue?.fail(err);
    this.socket?.close();
    await this.receiving?.catch(() => undefined);
  }
}
