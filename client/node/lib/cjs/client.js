"use strict";
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
Object.defineProperty(exports, "__esModule", { value: true });
exports.TtsClient = void 0;
exports.defaultBrokerUrl = defaultBrokerUrl;
const zeromq_1 = require("zeromq");
const curve_js_1 = require("./curve.js");
const errors_js_1 = require("./errors.js");
const jobs_js_1 = require("./jobs.js");
const jobStream_js_1 = require("./jobStream.js");
const liveness_js_1 = require("./liveness.js");
const naming_js_1 = require("./naming.js");
const codec_js_1 = require("./protocol/codec.js");
const constants_js_1 = require("./protocol/constants.js");
const requests_js_1 = require("./requests.js");
const retryPolicy_js_1 = require("./retryPolicy.js");
const sendQueue_js_1 = require("./sendQueue.js");
const RECEIVE_POLL_MS = 1000;
/** How often the client looks at its jobs and pings (the ping itself goes out every pingIntervalMs). */
const TICK_MS = 50;
const URL_PATTERN = /^(tcp|ipc|inproc|ws|wss|tipc|vmci|udp|pgm|epgm):\/\/\S+$/;
/** The broker URL the clients use: TTS_BROKER_URL, else tcp://127.0.0.1:5555. */
function defaultBrokerUrl(env = process.env) {
    return env["TTS_BROKER_URL"]?.trim() || constants_js_1.DEFAULT_FRONTEND;
}
/** A client of the TTS broker. Safe to share: every method may be called concurrently. */
class TtsClient {
    brokerUrl;
    stats = {
        submitted: 0,
        resubmitted: 0,
        retried: 0,
        completed: 0,
        failed: 0,
        brokerRestarts: 0,
        malformed: 0,
    };
    opts;
    curve;
    /** Set once the broker refused our CURVE key; every pending and later call fails with it. */
    refused;
    /** Socket monitor for CURVE handshake events, open until the first handshake succeeds (it keeps Node
     * alive, and a second monitor on the same socket blocks it). */
    observer;
    routingId;
    log;
    socket;
    sendQueue;
    jobTable;
    requests;
    receiving;
    ticker;
    closing;
    watch;
    /** performance.now() of the last message from the broker (undefined: none yet) and of the socket's start. */
    lastBrokerMsgMs;
    socketStartMs = 0;
    /** Throws InvalidArgumentError at once for a malformed broker URL; connects on first use. */
    constructor(options = {}) {
        this.brokerUrl = options.brokerUrl ?? defaultBrokerUrl();
        if (!URL_PATTERN.test(this.brokerUrl)) {
            throw new errors_js_1.InvalidArgumentError(`malformed broker URL ${JSON.stringify(this.brokerUrl)}: expected e.g. tcp://127.0.0.1:5555 or ipc:///path`);
        }
        this.routingId = options.routingId;
        this.curve = (0, curve_js_1.resolveCurve)(options);
        this.log = options.logger ?? { warn: (m) => console.warn(`tts-client: ${m}`), debug: () => undefined };
        this.opts = {
            requestTimeoutMs: options.requestTimeoutMs ?? 5000,
            jobTimeoutMs: options.jobTimeoutMs ?? 300_000,
            connectTimeoutMs: options.connectTimeoutMs ?? 10_000,
            pingIntervalMs: options.pingIntervalMs ?? retryPolicy_js_1.RETRY_POLICY.pingIntervalMs,
            resubmitAfterMs: options.resubmitAfterMs ?? retryPolicy_js_1.RETRY_POLICY.resubmitAfterMs,
            maxRetries: options.maxRetries ?? retryPolicy_js_1.RETRY_POLICY.maxRetries,
            retryBackoffMs: options.retryBackoffMs ?? retryPolicy_js_1.RETRY_POLICY.backoffInitialMs,
            retryBackoffMaxMs: options.retryBackoffMaxMs ?? retryPolicy_js_1.RETRY_POLICY.backoffCapMs,
            sendHighWaterMark: options.sendHighWaterMark ?? 100_000,
        };
        this.requests = new requests_js_1.RequestTable((frames) => this.sendFrames(frames), this.brokerUrl);
        this.watch = new liveness_js_1.BrokerWatch(this.opts.pingIntervalMs, (frames) => this.sendFrames(frames), this.log, this.brokerUrl);
        this.jobTable = new jobs_js_1.JobTable({ log: this.log, stats: this.stats, send: (frames) => this.sendFrames(frames), closed: () => this.isClosed }, this.opts);
    }
    /** A client connected to the broker; with waitMs, rejects with BrokerUnavailableError if no PONG comes. */
    static async connect(options = {}) {
        const client = new TtsClient(options);
        try {
            return await client.connect(options.waitMs === undefined ? {} : { waitMs: options.waitMs });
        }
        catch (err) {
            await client.close();
            throw err;
        }
    }
    /**
     * Open the socket (ZeroMQ connects in the background and reconnects by itself). With waitMs, also wait
     * until the broker answers a PING.
     */
    async connect(options = {}) {
        this.ensureSocket();
        if (options.waitMs !== undefined) {
            try {
                await this.ping({ timeoutMs: options.waitMs });
            }
            catch (err) {
                if (err instanceof errors_js_1.TimeoutError) {
                    throw new errors_js_1.BrokerUnavailableError(`no answer from the broker at ${this.brokerUrl} within ${options.waitMs} ms`);
                }
                throw err;
            }
        }
        return this;
    }
    get isClosed() {
        return this.closing !== undefined;
    }
    /** Jobs submitted and not finished. */
    get pendingJobs() {
        return this.jobTable.size;
    }
    /** Synthesise `text`; resolves with the whole utterance (PCM) and its metadata. */
    synthesize(text, options = {}) {
        return this.submit(text, options, undefined);
    }
    /**
     * Synthesise `text` and deliver audio chunks while the engine produces them. Iterate the returned stream;
     * `.result` gives the final result. Leaving the loop early cancels the job.
     */
    stream(text, options = {}) {
        const jobId = options.jobId ?? (0, naming_js_1.makeJobId)(options.jobIdPrefix ?? "stream");
        const stream = new jobStream_js_1.JobStream(jobId, () => void this.cancel(jobId).catch(() => undefined));
        this.submit(text, { ...options, jobId }, stream).catch((err) => stream.fail(err));
        return stream;
    }
    /** Ask the broker to cancel a job; its pending call then rejects with JobFailedError (code cancelled). */
    async cancel(jobId) {
        await this.sendFrames((0, codec_js_1.encodeMessage)(constants_js_1.Command.CANCEL, { job_id: jobId }));
    }
    /** The broker's status view (queue, jobs, workers). */
    async status(options = {}) {
        const msg = await this.request(constants_js_1.Command.BROKER_STATUS, {}, constants_js_1.Command.BROKER_STATUS_REPLY, options);
        return msg.body["status"];
    }
    /** The broker's view of one job. */
    async jobStatus(jobId, options = {}) {
        const msg = await this.request(constants_js_1.Command.JOB_STATUS, { job_id: jobId }, constants_js_1.Command.JOB_STATUS_REPLY, options);
        return msg.body["job"];
    }
    /** Recent jobs (live and retained), newest first; state "failed" gives the dead-letter list. */
    async jobs(filter = {}, options = {}) {
        const body = { state: filter.state ?? null, limit: filter.limit ?? 50 };
        const msg = await this.request(constants_js_1.Command.JOBS, body, constants_js_1.Command.JOBS_REPLY, options);
        return msg.body["jobs"];
    }
    /**
     * Put a failed or cancelled job back in the broker's queue (same id, attempts start again); resolves with
     * its new view. To wait for its result, synthesize() again with the same jobId: that attaches to it.
     */
    async retry(jobId, options = {}) {
        const msg = await this.request(constants_js_1.Command.RETRY, { job_id: jobId }, constants_js_1.Command.JOB_STATUS_REPLY, options);
        return msg.body["job"];
    }
    /**
     * A finished job's audio by its id alone (GET_RESULT), e.g. after retry() once the job is done; rejects with
     * RequestFailedError `not_found` (unknown, or no longer retained) or `bad_request` (not done).
     */
    async getResult(jobId, options = {}) {
        const msg = await this.request(constants_js_1.Command.GET_RESULT, { job_id: jobId }, constants_js_1.Command.RESULT_REPLY, options);
        return (0, jobs_js_1.synthesisResult)(msg.body["result"], msg.payload ?? new Uint8Array());
    }
    /** Round trip to the broker. */
    async ping(options = {}) {
        const t0 = performance.now();
        const msg = await this.request(constants_js_1.Command.PING, {}, constants_js_1.Command.PONG, options);
        return { brokerId: msg.body["broker_id"], timeMs: msg.body["time_ms"], rttMs: performance.now() - t0 };
    }
    /** Hot-reload the workers serving `model` (null = all) with `options`; resolves with how many were told. */
    async reload(model, options = {}, request = {}) {
        const msg = await this.request(constants_js_1.Command.RELOAD, { model, options }, constants_js_1.Command.RELOAD_REPLY, request);
        return msg.body["workers"];
    }
    /**
     * Hot-reload and wait until each told worker is back (or `waitMs` passed); resolves with each one's outcome.
     * The request's timeout is extended by `waitMs`.
     */
    async reloadWait(model, options = {}, waitMs = 120_000, request = {}) {
        const timeoutMs = (request.timeoutMs ?? this.opts.requestTimeoutMs) + waitMs;
        const msg = await this.request(constants_js_1.Command.RELOAD, { model, options, wait_ms: Math.max(1, Math.round(waitMs)) }, constants_js_1.Command.RELOAD_REPLY, { ...request, timeoutMs });
        return msg.body["outcomes"].map((o) => ({
            workerId: o["worker_id"],
            name: o["name"],
            outcome: o["outcome"],
            error: o["error"],
            newWorkerId: o["new_worker_id"],
        }));
    }
    /** Close the socket and reject everything pending with ClosedError. Idempotent. */
    close() {
        this.closing ??= this.shutdown();
        return this.closing;
    }
    // ---- jobs -------------------------------------------------------------------------------------------
    submit(text, options, stream) {
        let frames;
        let jobId;
        try {
            this.ensureSocket();
            jobId = options.jobId ?? (0, naming_js_1.makeJobId)(options.jobIdPrefix ?? "job");
            if (this.jobTable.has(jobId))
                throw new errors_js_1.InvalidArgumentError(`job ${jobId} is already pending in this client`);
            frames = (0, codec_js_1.encodeMessage)(constants_js_1.Command.SUBMIT, {
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
        }
        catch (err) {
            return Promise.reject(err instanceof errors_js_1.ProtocolError ? new errors_js_1.InvalidArgumentError(err.message, { cause: err }) : err);
        }
        const signal = options.signal;
        if (signal?.aborted)
            return Promise.reject(new errors_js_1.AbortError(`job ${jobId} aborted before submission`, signal.reason));
        const timeoutMs = options.timeoutMs ?? this.opts.jobTimeoutMs;
        const result = this.jobTable.add({ id: jobId, frames, stream, timeoutMs, signal });
        this.ensureReceiving();
        this.watch.pingSoon(performance.now()); // learn the broker's id now, so a restart soon after is recognised
        return result;
    }
    // ---- requests ---------------------------------------------------------------------------------------
    request(command, body, expect, options) {
        try {
            this.ensureSocket();
        }
        catch (err) {
            return Promise.reject(err);
        }
        const reply = this.requests.start(command, body, expect, options.timeoutMs ?? this.opts.requestTimeoutMs, options.signal);
        this.ensureReceiving();
        return reply;
    }
    // ---- socket, receive loop, liveness -------------------------------------------------------------------
    ensureSocket() {
        if (this.isClosed)
            throw new errors_js_1.ClosedError();
        if (this.socket !== undefined)
            return;
        const socket = new zeromq_1.Dealer({
            linger: 0,
            sendHighWaterMark: this.opts.sendHighWaterMark,
            receiveHighWaterMark: 0,
            receiveTimeout: RECEIVE_POLL_MS,
            ...(this.routingId === undefined ? {} : { routingId: this.routingId }),
            ...(this.curve ?? {}),
        });
        if (this.curve !== undefined)
            this.watchHandshakes(socket);
        try {
            socket.connect(this.brokerUrl);
        }
        catch (err) {
            socket.close();
            throw new errors_js_1.InvalidArgumentError(`cannot connect to ${this.brokerUrl}: ${err.message}`, { cause: err });
        }
        this.socket = socket;
        this.socketStartMs = performance.now();
        this.sendQueue = new sendQueue_js_1.SendQueue(socket);
        this.ticker = setInterval(() => this.tick(), TICK_MS);
        this.ticker.unref();
    }
    hasWork() {
        return this.jobTable.size > 0 || this.requests.size > 0;
    }
    ensureReceiving() {
        if (this.receiving !== undefined || this.isClosed || this.socket === undefined)
            return;
        this.receiving = this.receiveLoop(this.socket).finally(() => {
            this.receiving = undefined;
            if (this.hasWork())
                this.ensureReceiving(); // work registered while the loop was stopping
        });
    }
    /**
     * Report a refused CURVE key (handshake:error:auth) at once. Watches only until a handshake succeeds: a
     * key revoked later refuses the next reconnection, and calls then end as BrokerUnavailable by timeout.
     */
    watchHandshakes(socket) {
        const observer = new zeromq_1.Observer(socket);
        this.observer = observer;
        void (async () => {
            while (!observer.closed) {
                let event;
                try {
                    event = await observer.receive();
                }
                catch {
                    return; // closed
                }
                if (event.type === "handshake:error:auth") {
                    this.onRefused();
                }
                else if (event.type === "handshake") {
                    this.refused = undefined;
                    this.stopWatching();
                }
            }
        })();
    }
    stopWatching() {
        this.observer?.close();
        this.observer = undefined;
    }
    async receiveLoop(socket) {
        while (!this.isClosed) {
            let frames;
            try {
                frames = await socket.receive();
            }
            catch (err) {
                if (this.isClosed)
                    return;
                if (err.code === "EAGAIN") {
                    if (!this.hasWork())
                        return; // idle: stop, so the process may exit
                    continue;
                }
                this.log.warn(`receive failed: ${String(err)}`);
                return;
            }
            this.dispatch(frames);
            if (!this.hasWork())
                return;
        }
    }
    dispatch(frames) {
        let msg;
        try {
            msg = (0, codec_js_1.decodeMessage)(frames, constants_js_1.CLIENT_HEADER, false);
        }
        catch (err) {
            this.onMalformed(err);
            return;
        }
        this.lastBrokerMsgMs = performance.now();
        const body = msg.body;
        const jobId = typeof body["job_id"] === "string" ? body["job_id"] : undefined;
        switch (msg.command) {
            case constants_js_1.Command.ACCEPTED:
                if (jobId !== undefined)
                    this.jobTable.heard(jobId, true);
                return;
            case constants_js_1.Command.PARTIAL:
                if (jobId !== undefined) {
                    const stream = this.jobTable.heard(jobId, false);
                    stream?.pushPartial(body["attempt"], body["seq"], msg.payload, body["sample_rate"], body["channels"]);
                }
                return;
            case constants_js_1.Command.RESULT:
                if (jobId !== undefined)
                    this.jobTable.onResult(jobId, body, msg.payload);
                return;
            case constants_js_1.Command.ERROR:
                if (typeof body["req_id"] === "string" && this.requests.has(body["req_id"]))
                    this.requests.answer(body["req_id"], msg);
                else if (jobId !== undefined)
                    this.jobTable.onError(jobId, body);
                else if (body["job_id"] === null && body["req_id"] === null)
                    this.log.warn(`broker error: ${String(body["code"])}: ${String(body["message"])}`);
                return;
            case constants_js_1.Command.PONG: {
                const resubmit = this.watch.onPong(body["req_id"], body["broker_id"]);
                if (resubmit?.restarted)
                    this.stats.brokerRestarts += 1;
                if (resubmit !== undefined)
                    this.jobTable.resubmitAll(resubmit.why);
                this.requests.answer(body["req_id"], msg);
                return;
            }
            default:
                this.requests.answer(body["req_id"], msg);
        }
    }
    /** The broker's ZAP handler refused our key: say so now instead of timing out. */
    onRefused() {
        if (this.isClosed)
            return;
        if (this.refused === undefined)
            this.log.warn(`${curve_js_1.CURVE_REFUSED} (broker ${this.brokerUrl})`);
        this.refused = new errors_js_1.BrokerUnavailableError(`${curve_js_1.CURVE_REFUSED} (broker ${this.brokerUrl})`);
        this.jobTable.failAll(this.refused);
        this.requests.failAll(this.refused);
    }
    onMalformed(err) {
        this.stats.malformed += 1;
        this.log.warn(`malformed message from the broker: ${err.message}`);
        if (err.jobId !== undefined && this.jobTable.has(err.jobId))
            this.jobTable.abandon(err.jobId, err, false);
        else if (err.reqId !== undefined && this.requests.has(err.reqId))
            this.requests.answer(err.reqId, err);
    }
    /** Runs every TICK_MS while jobs are pending: the liveness PING every pingIntervalMs, quiet jobs. */
    tick() {
        if (this.jobTable.size === 0 || this.isClosed)
            return;
        const now = performance.now();
        this.watch.tick(now);
        this.jobTable.tick(now);
        this.failUnanswered(now);
    }
    /** The connect timeout: jobs that waited connectTimeoutMs while the broker said nothing (it never answered,
     * or went silent) fail with BrokerUnavailableError now, not at their jobTimeoutMs. */
    failUnanswered(now) {
        const limitMs = this.opts.connectTimeoutMs;
        if (limitMs <= 0)
            return;
        const heard = this.lastBrokerMsgMs ?? this.socketStartMs;
        if (now - heard < limitMs)
            return;
        const silence = this.lastBrokerMsgMs === undefined ? "has never answered" : `has not answered for ${Math.round((now - heard) / 1000)} s`;
        this.jobTable.failUnanswered(now, heard, limitMs, (what) => new errors_js_1.BrokerUnavailableError(`${what}: broker ${this.brokerUrl} ${silence} (connectTimeoutMs ${limitMs})`));
    }
    async sendFrames(frames) {
        this.ensureSocket();
        await this.sendQueue.send(frames);
    }
    async shutdown() {
        clearInterval(this.ticker);
        const err = new errors_js_1.ClosedError();
        this.jobTable.failAll(err);
        this.requests.failAll(err);
        this.sendQueue?.fail(err);
        this.stopWatching();
        this.socket?.close();
        await this.receiving?.catch(() => undefined);
    }
}
exports.TtsClient = TtsClient;
