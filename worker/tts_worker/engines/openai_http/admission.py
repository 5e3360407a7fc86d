"""Admission by time to first audio: an AIMD concurrency limit and a window of recent TTFA samples.

A speech server with continuous batching answers every request it is given, and its time to first audio
grows with the number in flight. The worker tells the broker how many jobs it takes at once (HEARTBEAT
`capacity`); this module decides that number so the measured TTFA stays under a target and the excess waits
in the broker's queue (priorities and fairness apply there) instead of inside the server.

The rule (TCP's congestion control, applied to first-audio latency):
- a sample over the target cuts the limit by `DECREASE` (at most once per round: samples of requests that
  started before the last cut were sent under the old limit and do not cut again);
- a sample under `HEADROOM` x target raises the limit, but only when the limit was in use when that request
  started (an idle worker learns nothing about the server's capacity): by 1 per sample while TTFA is below half
  the target ("slow start", doubling per round), else by 1/limit per sample (about 1 per round);
- between the two, the limit holds: the band keeps the limit from sawing across the target.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from typing import Optional

DECREASE = 0.75
HEADROOM = 0.8
SLOW_START_BELOW = 0.5
WINDOW = 256


class AdaptiveLimit:
    """How many requests the server gets at once: between `min_limit` and `max_limit`, steered by TTFA."""

    def __init__(self, *, target_ms: float, min_limit: int, max_limit: int) -> None:
        if not 1 <= min_limit <= max_limit:
            raise ValueError(f"need 1 <= min_limit ({min_limit}) <= max_limit ({max_limit})")
        self.target_ms = target_ms
        self.min_limit = min_limit
        self.max_limit = max_limit
        self._limit = float(min_limit)
        self._last_cut_at = -math.inf
        self._cuts = 0
        self._lock = threading.Lock()

    @property
    def fixed(self) -> bool:
        return self.min_limit == self.max_limit

    @property
    def limit(self) -> int:
        with self._lock:
            return int(self._limit)

    @property
    def cuts(self) -> int:
        return self._cuts

    def observe(self, ttfa_ms: float, *, started_at: float, in_flight_at_start: int,
                now: Optional[float] = None) -> None:
        """One request's time to first audio; `started_at` is its monotonic start, `in_flight_at_start` counts it."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if ttfa_ms > self.target_ms:
                self.congested(started_at=started_at, now=now, locked=True)
            elif ttfa_ms <= HEADROOM * self.target_ms and in_flight_at_start >= int(self._limit):
                step = 1.0 if ttfa_ms < SLOW_START_BELOW * self.target_ms else 1.0 / self._limit
                self._limit = min(float(self.max_limit), self._limit + step)

    def congested(self, *, started_at: float, now: Optional[float] = None, locked: bool = False) -> None:
        """A sign of overload other than a slow first audio (429, 503): cut as a slow sample would."""
        now = time.monotonic() if now is None else now
        if not locked:
            with self._lock:
                self.congested(started_at=started_at, now=now, locked=True)
            return
        if started_at <= self._last_cut_at:
            return  # sent under the limit that was already cut for this round
        self._limit = max(float(self.min_limit), self._limit * DECREASE)
        self._last_cut_at = now
        self._cuts += 1


class TtfaWindow:
    """The last WINDOW first-audio times, for percentiles in heartbeats and benchmarks."""

    def __init__(self, size: int = WINDOW) -> None:
        self._samples: collections.deque[float] = collections.deque(maxlen=size)
        self._lock = threading.Lock()
        self.count = 0

    def add(self, ttfa_ms: float) -> None:
        with self._lock:
            self._samples.append(ttfa_ms)
            self.count += 1

    def percentile(self, q: float) -> Optional[float]:
        """The q-th percentile (0..100, nearest rank) of the window, None when empty."""
        with self._lock:
            values = sorted(self._samples)
        if not values:
            return None
        rank = max(1, math.ceil(q / 100.0 * len(values)))
        return values[rank - 1]
