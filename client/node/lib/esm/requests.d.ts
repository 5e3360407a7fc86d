/** RequestTable: requests waiting for the broker's reply with their req_id (status, ping, jobs, retry, reload). */
import { type Message } from "./protocol/codec.js";
export declare class RequestTable {
    private readonly send;
    private readonly brokerUrl;
    private readonly pending;
    private counter;
    /** `send` queues frames on the client's socket; `brokerUrl` is for error messages. */
    constructor(send: (frames: Uint8Array[]) => Promise<void>, brokerUrl: string);
    get size(): number;
    has(reqId: string): boolean;
    /** Send `command` with a fresh req_id; resolves with the reply of type `expect`, rejects on ERROR. */
    start(command: number, body: Record<string, unknown>, expect: number, timeoutMs: number, signal: AbortSignal | undefined): Promise<Message>;
    /** Settle a pending request with the broker's reply (or an error about it). */
    answer(reqId: string, msg: Message | Error): void;
    failAll(err: Error): void;
}
