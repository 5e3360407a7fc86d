/**
 * BrokerWatch: the client's liveness PINGs and what their PONGs mean (PROTOCOL.md section 9). A new broker_id
 * means the broker restarted; a PONG after brokerLostPings intervals without one means it was unreachable
 * (and ZeroMQ may have dropped its replies). Either way the client resubmits its unfinished jobs.
 */

import { encodeMessage } from "./protocol/codec.js";
import { Command } from "./protocol/constants.js";
import { RETRY_POLICY } from "./retryPolicy.js";
import type { Logger } from "./types.js";

export class BrokerWatch {
  private brokerId: string | undefined;
  private lost = false;
  private pingId: string | undefined;
  private pingSentMs = 0;
  private lastPingMs = -Infinity;
  private seq = 0;

  constructor(
    private readonly intervalMs: number,
    private readonly send: (frames: Uint8Array[]) => Promise<void>,
    private readonly log: Logger,
    private readonly brokerUrl: string,
    private readonly onLost: () => void = () => undefined,
  ) {}

  /** PING now, unless pings are off, one is out, or the last went out less than an interval ago. */
  pingSoon(now: number): void {
    if (this.intervalMs > 0 && this.pingId === undefined && now - this.lastPingMs >= this.intervalMs) this.ping(now);
  }

  /** Call while jobs or requests are pending: declares the broker lost when its PONG is overdue; pings every interval. */
  tick(now: number): void {
    if (this.intervalMs <= 0) return;
    if (this.pingId !== undefined && now - this.pingSentMs >= RETRY_POLICY.brokerLostPings * this.intervalMs) {
      if (!this.lost) this.log.warn(`no PONG from ${this.brokerUrl} for ${Math.round(now - this.pingSentMs)} ms`);
      this.lost = true;
      this.pingId = undefined;
      this.lastPingMs = -Infinity; // ping the next endpoint (if any) at once
      this.onLost();
    }
    this.pingSoon(now);
  }

  /** A PONG (to any PING): why unfinished jobs must be resubmitted now, if they must. */
  onPong(reqId: string, brokerId: string): { why: string; restarted: boolean } | undefined {
    if (reqId === this.pingId) this.pingId = undefined;
    const restarted = this.brokerId !== undefined && brokerId !== this.brokerId;
    const why = restarted ? `broker restarted (${this.brokerId} -> ${brokerId})` : this.lost ? "broker answers again" : undefined;
    this.brokerId = brokerId;
    this.lost = false;
    return why === undefined ? undefined : { why, restarted };
  }

  private ping(now: number): void {
    this.pingId = `p${++this.seq}`;
    this.pingSentMs = now;
    this.lastPingMs = now;
    this.send(encodeMessage(Command.PING, { req_id: this.pingId })).catch(() => undefined);
  }
}
