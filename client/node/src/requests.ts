/** RequestTable: requests waiting for the broker's reply with their req_id (status, ping, jobs, retry, reload). */

import { AbortError, BrokerUnavailableError, InvalidArgumentError, ProtocolError, RequestFailedError, TimeoutError } from "./errors.js";
import { encodeMessage, type Message } from "./protocol/codec.js";
import { Command, commandName } from "./protocol/constants.js";

/**
 * Requests that only read the broker's state, so sending one again (to the next endpoint of a list, with the
 * same req_id) cannot do anything twice. RETRY and RELOAD change state: the lost broker may have carried them
 * out before it went, so they are never sent again.
 */
export const IDEMPOTENT_REQUESTS: ReadonlySet<number> = new Set([
  Command.PING,
  Command.BROKER_STATUS,
  Command.JOB_STATUS,
  Command.JOBS,
  Command.GET_RESULT,
]);

interface PendingRequest {
  command: number;
  /** The encoded request, kept to send it again to the next endpoint. */
  frames: Uint8Array[];
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
        command,
        frames,
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

  /**
   * The socket moved to the next endpoint (what was queued for the lost broker is gone): send every idempotent
   * request again; reject the others with BrokerUnavailableError at once, as nobody can say whether the lost
   * broker carried them out. Returns how many were sent again.
   */
  resendAll(lostUrl: string): number {
    let resent = 0;
    for (const [reqId, entry] of [...this.pending]) {
      if (IDEMPOTENT_REQUESTS.has(entry.command)) {
        resent += 1;
        this.send(entry.frames).catch((err: unknown) => {
          if (this.pending.get(reqId) !== entry) return;
          this.pending.delete(reqId);
          entry.cleanup();
          entry.reject(err instanceof Error ? err : new Error(String(err)));
        });
      } else {
        this.pending.delete(reqId);
        entry.cleanup();
        const name = commandName(entry.command) ?? `command ${entry.command}`;
        entry.reject(new BrokerUnavailableError(`the broker at ${lostUrl} was lost before it answered ${name}` +
          " (it may have carried it out; not sent again to the next broker)"));
      }
    }
    return resent;
  }

  failAll(err: Error): void {
    for (const entry of this.pending.values()) {
      entry.cleanup();
      entry.reject(err);
    }
    this.pending.clear();
  }
}
