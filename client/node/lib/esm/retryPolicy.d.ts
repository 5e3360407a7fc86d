/**
 * The client's retry policy in one place (PROTOCOL.md section 9; the values mirror protocol/retry_policy.json,
 * which the tests check). The client's option defaults come from here; backoffDelayMs() says how long to wait.
 */
export declare const RETRY_POLICY: {
    /** The wait before the first retry after a retryable ERROR. */
    readonly backoffInitialMs: 200;
    /** Each further retry waits this many times longer... */
    readonly backoffFactor: 2;
    /** ...but never longer than this. */
    readonly backoffCapMs: 5000;
    /** A wait is cut by a random share of up to this fraction, so clients that met the same error spread out. */
    readonly backoffJitterFraction: 0.25;
    /** Retries are bounded by the call's timeout, not counted (maxRetries may add a count). */
    readonly maxRetries: number;
    /** Resubmit a job the broker has said nothing about for this long. */
    readonly resubmitAfterMs: 5000;
    /** How often the client pings the broker while work is pending (a new broker_id means it restarted). */
    readonly pingIntervalMs: 1000;
    /** No PONG for this many ping intervals: the broker is lost; its next PONG makes the client resubmit. */
    readonly brokerLostPings: 3;
    /** The codes today's broker sends with retryable=true (for reading; the ERROR's retryable flag decides). */
    readonly retryableCodes: readonly ["internal", "journal_unavailable", "no_workers", "queue_full", "shutting_down", "too_many_jobs"];
};
/**
 * How long to wait (ms) before the retry that follows `retries` earlier ones (0 for the first):
 * min(cap, initial * factor ** retries), less up to a quarter at random, so in (3/4 of it, all of it]. The
 * lower bound makes every wait longer than any wait before it until the cap is reached.
 */
export declare function backoffDelayMs(retries: number, initialMs?: number, capMs?: number, uniform?: () => number): number;
