/** RequestTable: requests waiting for the broker's reply with their req_id (status, ping, jobs, retry, reload). */

import { AbortError, InvalidArgumentError, ProtocolError, RequestFailedError, TimeoutError } from "./errors.js";
import { encodeMessage, type Message } from "./protocol/codec.js";
import { Command } from "./protocol/constants.js";

interface PendingRequest {
  expect: number;
  resolve: (msg: Message) => void;
  reject: (err: Error) => void;
  cleanup: () => void;
}

export class RequestTable {
  private readonly pending = new Map<string, PendingRequest>();
  private counter = 0;

  /** `send` queues frames on the client's socket; `brokerUrl` is for error messages. */
  constructor(private readonly send: (frames: Uint8Array[]) => Promise<void>, private readonly brokerUrl: string) {}

  get size(): number {
    return this.pending.size;
  }

  has(reqId: string): boolean {
    return this.pending.has(reqId);
  }

  /** Send `command` with a fresh req_id; resolves with the reply of type `expect`, rejects on ERROR. */
  start(command: number, body: Record<string, unknown>, expect: number, timeoutMs: number, signal: AbortSignal | undefined): Promise<Message> {
    let frames: Uint8Array[];
    const reqId = `r${++this.counter}`;
    try {
      frames = encodeMessage(command, { req_id: reqId, ...body });
    } catch (err) {
      return Promise.reject(err instanceof ProtocolError ? new InvalidArgumentError(err.message, { cause: err }) : err);
    }
    if (signal?.aborted) return Promise.reject(new AbortError("request aborted", signal.reason));
    return new Promise<Message>((resolve, reject) => {
      const fail = (err: Error): void => {
        if (this.pending.get(reqId) === entry) {
          this.pending.delete(reqId);
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
      this.pending.set(reqId, entry);
      this.send(frames).catch((err: unknown) => fail(err instanceof Error ? err : new Error(String(err))));
    });
  }

  /** Settle a pending request with the broker's reply (or an error about it). */
  answer(reqId: string, msg: Message | Error): void {
    const entry = this.pending.get(reqId);
    if (entry === undefined) return; // timed out or aborted already, or nobody waits (a RETRY before a resubmission)
    this.pending.delete(reqId);
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

  failAll(err: Error): void {
    for (const entry of this.pending.values()) {
      entry.cleanup();
      entry.reject(err);
    }
    this.pending.clear();
  }
}
