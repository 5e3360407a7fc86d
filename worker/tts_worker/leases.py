"""The jobs a worker holds: one Lease per (job_id, attempt), and the cancel grace each must respect.

A lease belongs to the socket generation that received it (connection.py): once that socket is gone the
broker that leased the job has forgotten it, so its outcome is not reported and the job is stopped. A
cancelled lease gets `cancel_grace_s` to stop; a synthesis thread that ignores its cancel event past that
is a hung engine, which only a new process can cure (the daemon exits, the supervisor replaces it).

Used only from the worker's I/O thread; a lease's cancel event is what the synthesis thread sees.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Iterator, Optional

from tts_worker.synthesis import LeaseKey


@dataclasses.dataclass(slots=True)
class Lease:
    """A job in hand: (job_id, attempt) as leased on socket `generation`."""

    job_id: str
    attempt: int
    generation: int
    stream: bool
    cancel: threading.Event = dataclasses.field(default_factory=threading.Event)
    cancelled_by_broker: bool = False
    cancel_deadline: Optional[float] = None  # monotonic; set when the lease is first cancelled

    @property
    def key(self) -> LeaseKey:
        return (self.job_id, self.attempt)


class LeaseBook:
    """The leases in hand, by (job_id, attempt)."""

    def __init__(self, *, cancel_grace_s: float) -> None:
        self.cancel_grace_s = cancel_grace_s
        self._leases: dict[LeaseKey, Lease] = {}

    def __len__(self) -> int:
        return len(self._leases)

    def __contains__(self, key: object) -> bool:
        return key in self._leases

    def __iter__(self) -> Iterator[Lease]:
        return iter(list(self._leases.values()))

    def get(self, key: LeaseKey) -> Optional[Lease]:
        return self._leases.get(key)

    def open(self, job_id: str, attempt: int, *, generation: int, stream: bool) -> Lease:
        """Record a new lease; ValueError if that exact lease is already in hand."""
        key = (job_id, attempt)
        if key in self._leases:
            raise ValueError(f"job {job_id} attempt {attempt} is already in hand")
        lease = Lease(job_id, attempt, generation, stream)
        self._leases[key] = lease
        return lease

    def close(self, key: LeaseKey) -> Optional[Lease]:
        """Forget a lease whose outcome arrived (None if it was not in hand)."""
        return self._leases.pop(key, None)

    def cancel(self, lease: Lease, now: float, *, by_broker: bool = False) -> None:
        """Tell the synthesis thread to stop; the grace period starts at the first cancel only."""
        lease.cancel.set()
        lease.cancelled_by_broker = lease.cancelled_by_broker or by_broker
        if lease.cancel_deadline is None:
            lease.cancel_deadline = now + self.cancel_grace_s

    def cancel_all(self, now: float) -> list[Lease]:
        """Cancel every lease (their broker is gone); returns the ones not already cancelled."""
        fresh = [lease for lease in self._leases.values() if lease.cancel_deadline is None]
        for lease in self._leases.values():
            self.cancel(lease, now)
        return fresh

    def overdue(self, now: float) -> Optional[Lease]:
        """A cancelled lease whose engine is still running after its grace period, if any."""
        for lease in self._leases.values():
            if lease.cancel_deadline is not None and now > lease.cancel_deadline:
                return lease
        return None

    def busy_on(self, generation: int) -> int:
        """Leases held for the broker on socket `generation` (the heartbeat's `busy`)."""
        return sum(1 for lease in self._leases.values() if lease.generation == generation)
