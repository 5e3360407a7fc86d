/**
 * BrokerWatch: the client's liveness PINGs and what their PONGs mean (PROTOCOL.md section 9). A new broker_id
 * means the broker restarted; a PONG after brokerLostPings intervals without one means it was unreachable
 * (and ZeroMQ may have dropped its replies). Either way the client resubmits its unfinished jobs.
 */
import type { Logger } from "./types.js";
export declare class BrokerWatch {
    private readonly intervalMs;
    private readonly send;
    private readonly log;
    private readonly brokerUrl;
    private brokerId;
    private lost;
    private pingId;
    private pingSentMs;
    private lastPingMs;
    private seq;
    constructor(intervalMs: number, send: (frames: Uint8Array[]) => Promise<void>, log: Logger, brokerUrl: string);
    /** PING now, unless pings are off, one is out, or the last went out less than an interval ago. */
    pingSoon(now: number): void;
    /** Call while work is pending: declares the broker lost when its PONG is overdue, pings every interval. */
    tick(now: number): void;
    /** A PONG (to any PING): why unfinished jobs must be resubmitted now, if they must. */
    onPong(reqId: string, brokerId: string): {
        why: string;
        restarted: boolean;
    } | undefined;
    private ping;
}
