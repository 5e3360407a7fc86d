/**
 * Serialised sends on one ZeroMQ socket.
 *
 * zeromq.js allows one pending send() per socket (a second one fails with EBUSY), so every message of the
 * client goes through this queue, which awaits each send before starting the next.
 */
import type { Dealer } from "zeromq";
export declare class SendQueue {
    private readonly socket;
    private readonly items;
    private head;
    private pumping;
    private failure;
    constructor(socket: Dealer);
    /** Resolves once ZeroMQ queued the message for the broker (not when the broker got it). */
    send(frames: Uint8Array[]): Promise<void>;
    /** Messages waiting for their turn. */
    get length(): number;
    /** Reject everything still queued, and every later send, with `err`. */
    fail(err: Error): void;
    private pump;
}
