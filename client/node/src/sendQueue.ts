/**
 * Serialised sends on one ZeroMQ socket.
 *
 * zeromq.js allows one pending send() per socket (a second one fails with EBUSY), so every message of the
 * client goes through this queue, which awaits each send before starting the next.
 */

import type { Dealer } from "zeromq";

interface Pending {
  frames: Uint8Array[];
  resolve: () => void;
  reject: (err: unknown) => void;
}

export class SendQueue {
  private readonly items: Pending[] = [];
  private head = 0;
  private pumping = false;
  private failure: Error | undefined;
  private dropped = false;

  constructor(private readonly socket: Dealer) {}

  /** Resolves once ZeroMQ queued the message for the broker (not when the broker got it). */
  send(frames: Uint8Array[]): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise<void>((resolve, reject) => {
      this.items.push({ frames, resolve, reject });
      if (!this.pumping) void this.pump();
    });
  }

  /** Messages waiting for their turn. */
  get length(): number {
    return this.items.length - this.head;
  }

  /**
   * The socket is being replaced (failover to the next endpoint): settle everything queued as sent. What was
   * queued for a lost broker is lost either way; the jobs are resubmitted on the new socket.
   */
  drop(): void {
    this.dropped = true;
    const waiting = this.items.splice(this.head);
    this.items.length = 0;
    this.head = 0;
    for (const item of waiting) item.resolve();
  }

  /** Reject everything still queued, and every later send, with `err`. */
  fail(err: Error): void {
    this.failure = err;
    const waiting = this.items.splice(this.head);
    this.items.length = 0;
    this.head = 0;
    for (const item of waiting) item.reject(err);
  }

  private async pump(): Promise<void> {
    this.pumping = true;
    try {
      while (this.head < this.items.length) {
        const item = this.items[this.head++]!;
        try {
          await this.socket.send(item.frames);
          item.resolve();
        } catch (err) {
          if (this.dropped) item.resolve();
          else item.reject(this.failure ?? err);
        }
        if (this.head > 1024 && this.head * 2 > this.items.length) {
          this.items.splice(0, this.head); // compact now and then instead of shift() per message
          this.head = 0;
        }
      }
    } finally {
      this.pumping = false;
    }
  }
}
