"""The client's retry policy in one place (PROTOCOL.md section 9; the values mirror protocol/retry_policy.json).

The settings take their defaults from here; the I/O thread asks backoff_delay_s() how long to wait.
"""

from __future__ import annotations

import random
from typing import Callable

BACKOFF_INITIAL_S = 0.2
"""The wait before the first retry after a retryable ERROR."""
BACKOFF_FACTOR = 2.0
"""Each further retry waits this many times longer..."""
BACKOFF_CAP_S = 5.0
"""...but never longer than this."""
BACKOFF_JITTER_FRACTION = 0.25
"""A wait is cut by a random share of up to this fraction, so clients that met the same error spread out."""
RESUBMIT_AFTER_S = 5.0
"""Resubmit a job the broker has said nothing about for this long."""
PING_INTERVAL_S = 1.0
"""How often the client pings the broker (a new broker_id in PONG means it restarted)."""
BROKER_LOST_PINGS = 3
"""No PONG for this many ping intervals: the broker is lost; its next PONG makes the client resubmit."""


def backoff_delay_s(retries: int, *, initial_s: float = BACKOFF_INITIAL_S, cap_s: float = BACKOFF_CAP_S,
                    uniform: Callable[[], float] = random.random) -> float:
    """How long to wait before the retry that follows `retries` earlier ones (0 for the first).

    min(cap, initial * factor**retries), less up to a quarter at random: in (3/4 of it, all of it]. The lower
    bound makes every wait longer than any wait before it until the cap is reached.
    """
    exponent = min(max(retries, 0), 64)  # 2**64 * initial is far past any cap; no float overflow
    ceiling = min(cap_s, initial_s * BACKOFF_FACTOR ** exponent)
    return ceiling * (1.0 - BACKOFF_JITTER_FRACTION * uniform())
