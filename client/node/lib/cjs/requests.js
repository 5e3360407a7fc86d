"use strict";
/** RequestTable: requests waiting for the broker's reply with their req_id (status, ping, jobs, retry, reload). */
Object.defineProperty(exports, "__esModule", { value: true });
exports.RequestTable = void 0;
const errors_js_1 = require("./errors.js");
const codec_js_1 = require("./protocol/codec.js");
const constants_js_1 = require("./protocol/constants.js");
class RequestTable {
    send;
    brokerUrl;
    pending = new Map();
    counter = 0;
    /** `send` queues frames on the client's socket; `brokerUrl` is for error messages. */
    constructor(send, brokerUrl) {
        this.send = send;
        this.brokerUrl = brokerUrl;
    }
    get size() {
        return this.pending.size;
    }
    has(reqId) {
        return this.pending.has(reqId);
    }
    /** Send `command` with a fresh req_id; resolves with the reply of type `expect`, rejects on ERROR. */
    start(command, body, expect, timeoutMs, signal) {
        let frames;
        const reqId = `r${++this.counter}`;
        try {
            frames = (0, codec_js_1.encodeMessage)(command, { req_id: reqId, ...body });
        }
        catch (err) {
            return Promise.reject(err instanceof errors_js_1.ProtocolError ? new errors_js_1.InvalidArgumentError(err.message, { cause: err }) : err);
        }
        if (signal?.aborted)
            return Promise.reject(new errors_js_1.AbortError("request aborted", signal.reason));
        return new Promise((resolve, reject) => {
            const fail = (err) => {
                if (this.pending.get(reqId) === entry) {
                    this.pending.delete(reqId);
                    entry.cleanup();
                    reject(err);
                }
            };
            const onAbort = () => fail(new errors_js_1.AbortError("request aborted", signal?.reason));
            const timer = setTimeout(() => fail(new errors_js_1.TimeoutError(`no answer from the broker at ${this.brokerUrl} within ${timeoutMs} ms`, timeoutMs)), timeoutMs);
            const entry = {
                expect,
                resolve,
                reject,
                cleanup: () => {
                    clearTimeout(timer);
                    signal?.removeEventListener("abort", onAbort);
                },
            };
            signal?.addEventListener("abort", onAbort, { once: true });
            this.pending.set(reqId, entry);
            this.send(frames).catch((err) => fail(err instanceof Error ? err : new Error(String(err))));
        });
    }
    /** Settle a pending request with the broker's reply (or an error about it). */
    answer(reqId, msg) {
        const entry = this.pending.get(reqId);
        if (entry === undefined)
            return; // timed out or aborted already, or nobody waits (a RETRY before a resubmission)
        this.pending.delete(reqId);
        entry.cleanup();
        if (msg instanceof Error) {
            entry.reject(msg);
        }
        else if (msg.command === constants_js_1.Command.ERROR) {
            entry.reject(new errors_js_1.RequestFailedError(msg.body["code"], msg.body["message"], msg.body["retryable"]));
        }
        else if (msg.command !== entry.expect) {
            entry.reject(new errors_js_1.ProtocolError(`broker answered request ${reqId} with ${msg.name}`));
        }
        else {
            entry.resolve(msg);
        }
    }
    failAll(err) {
        for (const entry of this.pending.values()) {
            entry.cleanup();
            entry.reject(err);
        }
        this.pending.clear();
    }
}
exports.RequestTable = RequestTable;
