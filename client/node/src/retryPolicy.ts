/**
 * The client's retry policy in one place (PROTOCOL.md section 9; the values mirror protocol/retry_policy.json,
 * which the tests check). The client's option defaults come from here; backoffDelayMs() says how long to wait.
 */

export const RETRY_POLICY = {
  /** The wait before the first retry after a retryable ERROR. */
  backoffInitialMs: 200,
  /** Each further retry waits this many times longer... */
  backoffFactor: 2,
  /** ...but never longer than this. */
  backoffCapMs: 5000,
  /** A wait is cut by a random share of up to this fraction, so clients that met the same error spread out. */
  backoffJitterFraction: 0.25,
  /** Retries are bounded by the call's timeout, not counted (maxRetries may add a count). */
  maxRetries: Infinity,
  /** Resubmit a job the broker has said nothing about for this long. */
  resubmitAfterMs: 5000,
  /** How often the client pings the broker while work is pending (a new broker_id means it restarted). */
  pingIntervalMs: 1000,
  /** No PONG for this many ping intervals: the broker is lost; its next PONG makes the client resubmit. */
  brokerLostPings: 3,
  /** The codes today's broker sends with retryable=true (for reading; the ERROR's retryable flag decides). */
  retryableCodes: ["internal", "journal_unavailable", "no_workers", "queue_full", "shutting_down", "too_many_jobs"],
} as const;

/**
 * How long to wait (ms) before the retry that follows `retries` earlier ones (0 for the first):
 * min(cap, initial * factor ** retries), less up to a quarter at random, so in (3/4 of it, all of it]. The
 * lower bound makes every wait longer than any wait before it until the cap is reached.
 */
export function backoffDelayMs(
  retries: number,
  initialMs: number = RETRY_POLICY.backoffInitialMs,
  capMs: number = RETRY_POLICY.backoffCapMs,
  uniform: () => number = Math.random,
): number {
  const exponent = Math.min(Math.max(retries, 0), 64); // far past any cap; no overflow to Infinity * 0
  const ceiling = Math.min(capMs, initialMs * RETRY_POLICY.backoffFactor ** exponent);
  return ceiling * (1 - RETRY_POLICY.backoffJitterFraction * uniform());
}
