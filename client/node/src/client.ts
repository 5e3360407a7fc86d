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

import { Dealer, Observer } from "zeromq";

import { CURVE_REFUSED, resolveCurve, type CurveKeys, type CurveOptions } from "./curve.js";
import {
  AbortError,
  BrokerUnavailableError,
  ClosedError,
  InvalidArgumentError,
  ProtocolError,
  TimeoutError,
} from "./errors.js";
import { JobTable, synthesisResult } from "./jobs.js";
import { JobStream } from "./jobStream.js";
import { BrokerWatch } from "./liveness.js";
import { makeJobId } from "./naming.js";
import { decodeMessage, encodeMessage, MalformedMessageError, type Message } from "./protocol/codec.js";
import { CLIENT_HEADER, Command, DEFAULT_FRONTEND, type JobState } from "./protocol/constants.js";
import { RequestTable } from "./requests.js";
import { RETRY_POLICY } from "./retryPolicy.js";
import { SendQueue } from "./sendQueue.js";
import type {
  ClientStats,
  JobView,
  Logger,
  PongInfo,
  ReloadOutcome,
  RequestOptions,
  StatusView,
  SynthesisResult,
  SynthesizeOptions,
  TtsClientOptions,
  VoiceValue,
} from "./types.js";

const RECEIVE_POLL_MS = 1000;
/** How often the client looks at its jobs and pings (the ping itself goes out every pingIntervalMs). */
const TICK_MS = 50;
const URL_PATTERN = /^(tcp|ipc|inproc|ws|wss|tipc|vmci|udp|pgm|epgm):\/\/\S+$/;

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

  private readonly opts: Required<Omit<TtsClientOptions, "brokerUrl" | "routingId" | "logger" | keyof CurveOptions>>;
  private readonly curve: CurveKeys | undefined;
  /** Set once the broker refused our CURVE key; every pending and later call fails with it. */
  private refused: BrokerUnavailableError | undefined;
  /** Socket monitor for CURVE handshake events, open until the first handshake succeeds (it keeps Node
   * alive, and a second monitor on the same socket blocks it). */
  private observer: Observer | undefined;
  private readonly routingId: string | undefined;
  readonly log: Logger;
  private socket: Dealer | undefined;
  private sendQueue: SendQueue | undefined;
  private readonly jobTable: JobTable;
  private readonly requests: RequestTable;
  private receiving: Promise<void> | undefined;
  private ticker: NodeJS.Timeout | undefined;
  private closing: Promise<void> | undefined;
  private readonly watch: BrokerWatch;
  private readonly endpoints: string[];
  private endpointIndex = 0;
  /** performance.now() of the last message from the broker (undefined: none yet) and of the socket's start. */
  private lastBrokerMsgMs: number | undefined;
  private socketStartMs = 0;

  /** Throws InvalidArgumentError at once for a malformed broker URL; connects on first use. */
  constructor(options: TtsClientOptions = {}) {
    this.brokerUrl = options.brokerUrl ?? defaultBrokerUrl();
    // A comma-separated list names an active broker and its standbys (docs/failover.md): one socket, to one
    // endpoint at a time, moved to the next when the broker in use is lost (PROTOCOL.md section 9).
    this.endpoints = this.brokerUrl.split(",").map((part) => part.trim()).filter((part) => part.length > 0);
    if (this.endpoints.length === 0 || !this.endpoints.every((endpoint) => URL_PATTERN.test(endpoint))) {
      throw new InvalidArgumentError(
        `malformed broker URL ${JSON.stringify(this.brokerUrl)}: expected e.g. tcp://127.0.0.1:5555 or ipc:///path` +
          " (or a comma-separated list of them)",
      );
    }
    this.routingId = options.routingId;
    this.curve = resolveCurve(options);
    this.log = options.logger ?? { warn: (m) => console.warn(`tts-client: ${m}`), debug: () => undefined };
    this.opts = {
      requestTimeoutMs: options.requestTimeoutMs ?? 5000,
      jobTimeoutMs: options.jobTimeoutMs ?? 300_000,
      connectTimeoutMs: options.connectTimeoutMs ?? 10_000,
      pingIntervalMs: options.pingIntervalMs ?? RETRY_POLICY.pingIntervalMs,
      resubmitAfterMs: options.resubmitAfterMs ?? RETRY_POLICY.resubmitAfterMs,
      maxRetries: options.maxRetries ?? RETRY_POLICY.maxRetries,
      retryBackoffMs: options.retryBackoffMs ?? RETRY_POLICY.backoffInitialMs,
      retryBackoffMaxMs: options.retryBackoffMaxMs ?? RETRY_POLICY.backoffCapMs,
      sendHighWaterMark: options.sendHighWaterMark ?? 100_000,
    };
    this.requests = new RequestTable((frames) => this.sendFrames(frames), this.brokerUrl);
    this.watch = new BrokerWatch(this.opts.pingIntervalMs, (frames) => this.sendFrames(frames), this.log, this.brokerUrl,
      () => this.nextEndpoint());
    this.jobTable = new JobTable(
      { log: this.log, stats: this.stats, send: (frames) => this.sendFrames(frames), closed: () => this.isClosed },
      this.opts,
    );
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
    return this.jobTable.size;
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

  /**
   * A finished job's audio by its id alone (GET_RESULT), e.g. after retry() once the job is done; rejects with
   * RequestFailedError `not_found` (unknown, or no longer retained) or `bad_request` (not done).
   */
  async getResult(jobId: string, options: RequestOptions = {}): Promise<SynthesisResult> {
    const msg = await this.request(Command.GET_RESULT, { job_id: jobId }, Command.RESULT_REPLY, options);
    return synthesisResult(msg.body["result"] as Record<string, unknown>, msg.payload ?? new Uint8Array());
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

  /**
   * Hot-reload and wait until each told worker is back (or `waitMs` passed); resolves with each one's outcome.
   * The request's timeout is extended by `waitMs`.
   */
  async reloadWait(model: string | null, options: Record<string, VoiceValue> = {}, waitMs = 120_000, request: RequestOptions = {}): Promise<ReloadOutcome[]> {
    const timeoutMs = (request.timeoutMs ?? this.opts.requestTimeoutMs) + waitMs;
    const msg = await this.request(Command.RELOAD, { model, options, wait_ms: Math.max(1, Math.round(waitMs)) }, Command.RELOAD_REPLY, { ...request, timeoutMs });
    return (msg.body["outcomes"] as Record<string, unknown>[]).map((o) => ({
      workerId: o["worker_id"] as string,
      name: o["name"] as string,
      outcome: o["outcome"] as ReloadOutcome["outcome"],
      error: o["error"] as string,
      newWorkerId: o["new_worker_id"] as string,
    }));
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
      if (this.jobTable.has(jobId)) throw new InvalidArgumentError(`job ${jobId} is already pending in this client`);
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
    const result = this.jobTable.add({ id: jobId, frames, stream, timeoutMs, signal });
    this.ensureReceiving();
    this.watch.pingSoon(performance.now()); // learn the broker's id now, so a restart soon after is recognised
    return result;
  }

  // ---- requests ---------------------------------------------------------------------------------------

  private request(command: number, body: Record<string, unknown>, expect: number, options: RequestOptions): Promise<Message> {
    try {
      this.ensureSocket();
    } catch (err) {
      return Promise.reject(err);
    }
    const reply = this.requests.start(command, body, expect, options.timeoutMs ?? this.opts.requestTimeoutMs, options.signal);
    this.ensureReceiving();
    return reply;
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
      ...(this.curve ?? {}),
    });
    if (this.curve !== undefined) this.watchHandshakes(socket);
    const endpoint = this.endpoints[this.endpointIndex % this.endpoints.length]!;
    try {
      socket.connect(endpoint);
    } catch (err) {
      socket.close();
      throw new InvalidArgumentError(`cannot connect to ${endpoint}: ${(err as Error).message}`, { cause: err });
    }
    this.socket = socket;
    this.socketStartMs = performance.now();
    this.sendQueue = new SendQueue(socket);
    this.ticker = setInterval(() => this.tick(), TICK_MS);
    this.ticker.unref();
  }

  /**
   * The broker in use is lost and the URL is a list: close the socket (dropping what it had queued; ZeroMQ
   * would deliver it to that broker only) and open one to the next endpoint. Its first PONG carries a new
   * broker_id, so the unfinished jobs are resubmitted there by job id. Pending requests that only read
   * (status, ping, jobs, job status, get result) are sent again now; RETRY and RELOAD fail (requests.ts).
   */
  private nextEndpoint(): void {
    if (this.endpoints.length < 2 || this.isClosed || this.socket === undefined) return;
    const lost = this.endpoints[this.endpointIndex % this.endpoints.length]!;
    this.endpointIndex += 1;
    this.log.warn(`trying the next broker: ${this.endpoints[this.endpointIndex % this.endpoints.length]!}`);
    clearInterval(this.ticker);
    this.sendQueue?.drop();
    this.stopWatching();
    const old = this.socket;
    this.socket = undefined;
    old.close();
    this.ensureSocket();
    const resent = this.requests.resendAll(lost);
    if (resent > 0) this.log.debug(`sent ${resent} pending request(s) again to the next broker`);
    this.ensureReceiving();
  }

  private hasWork(): boolean {
    return this.jobTable.size > 0 || this.requests.size > 0;
  }

  private ensureReceiving(): void {
    if (this.receiving !== undefined || this.isClosed || this.socket === undefined) return;
    this.receiving = this.receiveLoop(this.socket).finally(() => {
      this.receiving = undefined;
      if (this.hasWork()) this.ensureReceiving(); // work registered while the loop was stopping
    });
  }

  /**
   * Report a refused CURVE key (handshake:error:auth) at once. Watches only until a handshake succeeds: a
   * key revoked later refuses the next reconnection, and calls then end as BrokerUnavailable by timeout.
   */
  private watchHandshakes(socket: Dealer): void {
    const observer = new Observer(socket);
    this.observer = observer;
    void (async () => {
      while (!observer.closed) {
        let event;
        try {
          event = await observer.receive();
        } catch {
          return; // closed
        }
        if (event.type === "handshake:error:auth") {
          this.onRefused();
        } else if (event.type === "handshake") {
          this.refused = undefined;
          this.stopWatching();
        }
      }
    })();
  }

  private stopWatching(): void {
    this.observer?.close();
    this.observer = undefined;
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
    this.lastBrokerMsgMs = performance.now();
    const body = msg.body;
    const jobId = typeof body["job_id"] === "string" ? body["job_id"] : undefined;
    switch (msg.command) {
      case Command.ACCEPTED:
        if (jobId !== undefined) this.jobTable.heard(jobId, true);
        return;
      case Command.PARTIAL:
        if (jobId !== undefined) {
          const stream = this.jobTable.heard(jobId, false);
          stream?.pushPartial(body["attempt"] as number, body["seq"] as number, msg.payload!, body["sample_rate"] as number, body["channels"] as number);
        }
        return;
      case Command.RESULT:
        if (jobId !== undefined) this.jobTable.onResult(jobId, body, msg.payload!);
        return;
      case Command.ERROR:
        if (typeof body["req_id"] === "string" && this.requests.has(body["req_id"])) this.requests.answer(body["req_id"], msg);
        else if (jobId !== undefined) this.jobTable.onError(jobId, body);
        else if (body["job_id"] === null && body["req_id"] === null) this.log.warn(`broker error: ${String(body["code"])}: ${String(body["message"])}`);
        return;
      case Command.PONG: {
        const resubmit = this.watch.onPong(body["req_id"] as string, body["broker_id"] as string);
        if (resubmit?.restarted) this.stats.brokerRestarts += 1;
        if (resubmit !== undefined) this.jobTable.resubmitAll(resubmit.why);
        this.requests.answer(body["req_id"] as string, msg);
        return;
      }
      default:
        this.requests.answer(body["req_id"] as string, msg);
    }
  }

  /** The broker's ZAP handler refused our key: say so now instead of timing out. */
  private onRefused(): void {
    if (this.isClosed) return;
    if (this.refused === undefined) this.log.warn(`${CURVE_REFUSED} (broker ${this.brokerUrl})`);
    this.refused = new BrokerUnavailableError(`${CURVE_REFUSED} (broker ${this.brokerUrl})`);
    this.jobTable.failAll(this.refused);
    this.requests.failAll(this.refused);
  }

  private onMalformed(err: MalformedMessageError): void {
    this.stats.malformed += 1;
    this.log.warn(`malformed message from the broker: ${err.message}`);
    if (err.jobId !== undefined && this.jobTable.has(err.jobId)) this.jobTable.abandon(err.jobId, err, false);
    else if (err.reqId !== undefined && this.requests.has(err.reqId)) this.requests.answer(err.reqId, err);
  }

  /**
   * Runs every TICK_MS while jobs or requests are pending: the liveness PING every pingIntervalMs (so a lost
   * broker is noticed, and the next endpoint tried, also when the caller only waits for a status), quiet jobs.
   */
  private tick(): void {
    if (!this.hasWork() || this.isClosed) return;
    const now = performance.now();
    this.watch.tick(now);
    this.jobTable.tick(now);
    this.failUnanswered(now);
  }

  /** The connect timeout: jobs that waited connectTimeoutMs while the broker said nothing (it never answered,
   * or went silent) fail with BrokerUnavailableError now, not at their jobTimeoutMs. */
  private failUnanswered(now: number): void {
    const limitMs = this.opts.connectTimeoutMs;
    if (limitMs <= 0) return;
    const heard = this.lastBrokerMsgMs ?? this.socketStartMs;
    if (now - heard < limitMs) return;
    const silence = this.lastBrokerMsgMs === undefined ? "has never answered" : `has not answered for ${Math.round((now - heard) / 1000)} s`;
    this.jobTable.failUnanswered(now, heard, limitMs, (what) =>
      new BrokerUnavailableError(`${what}: broker ${this.brokerUrl} ${silence} (connectTimeoutMs ${limitMs})`));
  }

  private async sendFrames(frames: Uint8Array[]): Promise<void> {
    this.ensureSocket();
    await this.sendQueue!.send(frames);
  }

  private async shutdown(): Promise<void> {
    clearInterval(this.ticker);
    const err = new ClosedError();
    this.jobTable.failAll(err);
    this.requests.failAll(err);
    this.sendQueue?.fail(err);
    this.stopWatching();
    this.socket?.close();
    await this.receiving?.catch(() => undefined);
  }
}
