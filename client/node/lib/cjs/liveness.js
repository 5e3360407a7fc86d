"use strict";
/**
 * BrokerWatch: the client's liveness PINGs and what their PONGs mean (PROTOCOL.md section 9). A new broker_id
 * means the broker restarted; a PONG after brokerLostPings intervals without one means it was unreachable
 * (and ZeroMQ may have dropped its replies). Either way the client resubmits its unfinished jobs.
 */
Object.defineProperty(exports, "__esModule", { value: true });
exports.BrokerWatch = void 0;
const codec_js_1 = require("./protocol/codec.js");
const constants_js_1 = require("./protocol/constants.js");
const retryPolicy_js_1 = require("./retryPolicy.js");
class BrokerWatch {
    intervalMs;
    send;
    log;
    brokerUrl;
    brokerId;
    lost = false;
    pingId;
    pingSentMs = 0;
    lastPingMs = -Infinity;
    seq = 0;
    constructor(intervalMs, send, log, brokerUrl) {
        this.intervalMs = intervalMs;
        this.send = send;
        this.log = log;
        this.brokerUrl = brokerUrl;
    }
    /** PING now, unless pings are off, one is out, or the last went out less than an interval ago. */
    pingSoon(now) {
        if (this.intervalMs > 0 && this.pingId === undefined && now - this.lastPingMs >= this.intervalMs)
            this.ping(now);
    }
    /** Call while work is pending: declares the broker lost when its PONG is overdue, pings every interval. */
    tick(now) {
        if (this.intervalMs <= 0)
            return;
        if (this.pingId !== undefined && now - this.pingSentMs >= retryPolicy_js_1.RETRY_POLICY.brokerLostPings * this.intervalMs) {
            if (!this.lost)
                this.log.warn(`no PONG from ${this.brokerUrl} for ${Math.round(now - this.pingSentMs)} ms`);
            this.lost = true;
            this.pingId = undefined;
        }
        this.pingSoon(now);
    }
    /** A PONG (to any PING): why unfinished jobs must be resubmitted now, if they must. */
    onPong(reqId, brokerId) {
        if (reqId === this.pingId)
            this.pingId = undefined;
        const restarted = this.brokerId !== undefined && brokerId !== this.brokerId;
        const why = restarted ? `broker restarted (${this.brokerId} -> ${brokerId})` : this.lost ? "broker answers again" : undefined;
        this.brokerId = brokerId;
        this.lost = false;
        return why === undefined ? undefined : { why, restarted };
    }
    ping(now) {
        this.pingId = `p${++this.seq}`;
        this.pingSentMs = now;
        this.lastPingMs = now;
        this.send((0, codec_js_1.encodeMessage)(constants_js_1.Command.PING, { req_id: this.pingId })).catch(() => undefined);
    }
}
exports.BrokerWatch = BrokerWatch;
