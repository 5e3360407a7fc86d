"""Jobs that survive a broker failover: kept running, re-announced in READY, reported to the next broker.

Only with an endpoint list (an active broker and its standbys, docs/failover.md). When the broker falls silent
the worker keeps its leases instead of cancelling them, moves to the next endpoint, names the leases it still
holds in READY (`running`), and rebinds them to the new socket. The new active broker adopts them (or cancels
the ones it cannot). An outcome that arrives while no broker has answered yet is held here and sent once the
new broker has said anything on the new socket, so it cannot vanish into the pipe of a standby. Leases that
no broker takes back within `keep_s` are cancelled, as a single-endpoint worker does at once.

A RESULT sent just before the broker died may never have reached its journal (the broker commits once per
loop turn, and ZeroMQ gives no receipt). So the outcomes sent in the last `resend_window_s` before the loss
are kept too, re-announced like running leases, and sent again: the new broker adopts the ones its journal
still shows running and cancels the ones it already has, so each job is run once and answered once.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Any, Optional

from tts_protocol.messages import MAX_CAPACITY, LeaseRef

from tts_worker.leases import Lease, LeaseBook

log = logging.getLogger(__name__)


class SurvivingLeases:
    """Outcomes held for the next broker, and how long orphaned leases may wait for one."""

    def __init__(self, leases: LeaseBook, *, keep_s: float, resend_window_s: float) -> None:
        self.leases = leases
        self.keep_s = keep_s
        self.resend_window_s = resend_window_s
        self.held: dict[tuple[str, int], Any] = {}  # lease key -> its Done/Failed event
        self.orphaned_since: Optional[float] = None
        self._sent: collections.deque[tuple[float, Lease, Any]] = collections.deque()

    def sent(self, lease: Lease, event: Any) -> None:
        """An outcome went to the broker on lease.generation's socket; kept a while in case that broker dies."""
        now = time.monotonic()
        self._sent.append((now, lease, event))
        self._prune(now)

    def _prune(self, now: float) -> None:
        while self._sent and now - self._sent[0][0] > self.resend_window_s:
            self._sent.popleft()

    def orphan(self, now: float) -> None:
        """The broker is lost: keep the leases, and the outcomes it may not have journaled, for the next one."""
        self._prune(now)
        for _, lease, event in self._sent:
            if lease.key not in self.leases:
                self.leases.open(lease.job_id, lease.attempt, generation=lease.generation, stream=lease.stream)
                self.held[lease.key] = event
        self._sent.clear()
        if len(self.leases) and self.orphaned_since is None:
            self.orphaned_since = now

    def hold(self, lease: Lease, event: Any) -> bool:
        """An outcome for a lease of a lost broker: keep it (True) unless the lease was cancelled."""
        if lease.cancel.is_set():
            return False
        self.held[lease.key] = event
        return True

    def announce(self, generation: int) -> list[LeaseRef]:
        """For READY on socket `generation`: the leases still in hand, rebound to that socket."""
        refs = []
        for lease in self.leases:
            if lease.cancel.is_set():
                continue
            lease.generation = generation
            refs.append(LeaseRef(job_id=lease.job_id, attempt=lease.attempt))
        return refs[:MAX_CAPACITY]

    def release(self) -> list[Any]:
        """The new broker answered: the held outcomes to report now (in the order they arrived)."""
        events = list(self.held.values())
        self.held.clear()
        self.orphaned_since = None
        return events

    def forget(self, key: tuple[str, int]) -> bool:
        """The broker cancelled a lease whose outcome is held: drop it; True if there was one."""
        if self.held.pop(key, None) is None:
            return False
        self.leases.close(key)
        return True

    def orphaned(self) -> bool:
        """Leases (or held outcomes) wait for a next broker."""
        return self.orphaned_since is not None

    def expired(self, now: float) -> bool:
        """No broker took the leases back within keep_s: the caller cancels them."""
        if self.orphaned_since is None or now - self.orphaned_since < self.keep_s:
            return False
        log.warning("no broker took back %d job(s) in hand within %.0f s; cancelling them", len(self.leases),
                    self.keep_s)
        self.give_up()
        return True

    def give_up(self) -> None:
        """No broker will take the leases back (the wait ran out, or the worker is leaving): close the held
        outcomes; the caller cancels the leases still running. The next active broker requeues what nobody
        claims (adoption.py), so a job given up here runs again rather than being lost."""
        for key in list(self.held):
            self.leases.close(key)
        self.held.clear()
        self.orphaned_since = None
