"""When the local supervisor (`tts-worker --min N --max M`) starts or stops worker processes.

The policy is a pure function of what the supervisor observed: the broker's queue (BROKER_STATUS over a
client socket, see broker_probe.py), its own workers' busy slots, free memory and a per-worker memory
estimate. It returns a Decision the supervisor carries out and logs; its reason is shown in `tts status`
(the workers' heartbeat carries the supervisor's last decision).

- Up: the queue holds more jobs than this supervisor's workers have idle slots (counting processes still
  starting as one slot each), and has done so for
  `scale_up_wait_s` (the wait time), and fewer than `max` processes run: start as many as the backlog asks
  for, at most up to `max`, and only as many as free memory minus a reserve holds at the per-worker estimate.
- Down: no queued job and idle workers for `scale_down_idle_s`: stop the idle ones down to `min` (they are
  drained through the broker first, so a job in hand is always finished).
- Below `min` (a crash, a start): back up to `min` at once, memory permitting.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

MIB = 1024 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class ScalePolicy:
    """The knobs (WorkerSettings: min_workers, max_workers, scale_*; memory_*)."""

    min_workers: int
    max_workers: int
    scale_up_wait_s: float = 1.0
    scale_down_idle_s: float = 30.0
    memory_reserve_bytes: int = 256 * MIB
    worker_memory_bytes: int = 0  # 0 = measure: the largest RSS of the running workers


@dataclasses.dataclass(frozen=True, slots=True)
class Observation:
    """One look at the world, taken by the supervisor."""

    now: float
    processes: int  # worker processes running (or starting) under this supervisor
    queue_depth: Optional[int]  # None: the broker did not answer
    idle_slots: int  # free slots of this supervisor's registered workers
    busy_slots: int
    available_bytes: int  # psutil.virtual_memory().available
    measured_rss_bytes: int  # largest RSS among the running workers; 0 when none measured yet
    starting: int = 0  # processes started but not registered yet: capacity on its way


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    """How many processes to start (+) or stop (-), and why (for the log and status)."""

    delta: int
    reason: str


class Autoscaler:
    """Keeps the timers the policy needs (since when backlogged, since when idle) between observations."""

    def __init__(self, policy: ScalePolicy) -> None:
        if not 0 <= policy.min_workers <= policy.max_workers:
            raise ValueError(f"need 0 <= min ({policy.min_workers}) <= max ({policy.max_workers})")
        self.policy = policy
        self._backlog_since: Optional[float] = None
        self._idle_since: Optional[float] = None
        self.memory_limited = False

    def per_worker_bytes(self, seen: Observation) -> int:
        return self.policy.worker_memory_bytes or seen.measured_rss_bytes

    def affordable(self, seen: Observation, wanted: int) -> int:
        """How many of `wanted` new processes free memory holds (all of them before any RSS is known)."""
        per_worker = self.per_worker_bytes(seen)
        if per_worker <= 0:
            return wanted
        spare = seen.available_bytes - self.policy.memory_reserve_bytes
        return max(0, min(wanted, spare // per_worker))

    def decide(self, seen: Observation) -> Decision:
        policy = self.policy
        if seen.processes < policy.min_workers:
            return self._grow(seen, policy.min_workers - seen.processes, "below min")
        depth = seen.queue_depth
        if depth is None:
            self._backlog_since = self._idle_since = None
            return Decision(0, "broker did not answer")
        backlog = depth - seen.idle_slots - seen.starting
        if backlog > 0:
            self._idle_since = None
            if self._backlog_since is None:
                self._backlog_since = seen.now
            waited = seen.now - self._backlog_since
            if waited >= policy.scale_up_wait_s and seen.processes < policy.max_workers:
                wanted = min(backlog, policy.max_workers - seen.processes)
                return self._grow(seen, wanted, f"queue {depth} > {seen.idle_slots} idle slots for {waited:.1f}s")
            return Decision(0, f"queue {depth}, {seen.processes} workers")
        self._backlog_since = None
        if depth == 0 and seen.idle_slots > 0 and seen.processes > policy.min_workers:
            if self._idle_since is None:
                self._idle_since = seen.now
            idle_for = seen.now - self._idle_since
            if idle_for >= policy.scale_down_idle_s:
                self._idle_since = None
                surplus = min(seen.processes - policy.min_workers, seen.idle_slots)
                return Decision(-surplus, f"idle for {idle_for:.1f}s")
            return Decision(0, f"idle {idle_for:.1f}s")
        self._idle_since = None
        return Decision(0, f"queue {depth}, {seen.processes} workers")

    def _grow(self, seen: Observation, wanted: int, why: str) -> Decision:
        allowed = self.affordable(seen, wanted)
        self.memory_limited = allowed < wanted
        if allowed <= 0:
            return Decision(0, f"{why}, but free memory {seen.available_bytes // MIB} MiB holds no more workers "
                               f"of {self.per_worker_bytes(seen) // MIB} MiB")
        note = f" (memory allows {allowed} of {wanted})" if allowed < wanted else ""
        return Decision(allowed, f"{why}{note}")
