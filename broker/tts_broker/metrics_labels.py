"""Which routing keys may become a Prometheus `model` label: those some worker serves, and a few pinned ones.

A job's `model` is the client's choice; labelling it as is let one client create 20,000 series (/metrics
10 MB, +45 MB RSS) that never went away. A key is a label while some connected worker serves it (and for
`grace_s` after the last one left, so a restarting worker does not split its series), or when it is pinned:
the broker's default model and `--metrics-models` (a scale-from-zero deployment must see the queue of a model
that has no worker yet). Every other key is counted under `other`; jobs that name no model are `any`.
"""

from __future__ import annotations

from typing import Iterable, Optional

from tts_protocol import routing

from tts_broker.workers import WorkerRecord, WorkerRegistry

ANY = "any"
OTHER = "other"


class RoutingLabels:
    """The label a routing key gets, and the set of labels whose series are kept."""

    def __init__(self, pinned: Iterable[str] = (), *, grace_s: float = 600.0) -> None:
        self.pinned = frozenset(pinned)
        self.grace_s = grace_s
        self._served_until: dict[str, float] = {}

    def refresh(self, workers: Iterable[WorkerRecord], now: float) -> None:
        """Note the keys connected workers serve; forget those nobody has served for grace_s."""
        until = now + self.grace_s
        for worker in workers:
            for key in routing.served_keys(worker.ready.engine, worker.ready.model):
                if key is not None:
                    self._served_until[key] = until
        for key in [k for k, t in self._served_until.items() if t < now]:
            del self._served_until[key]

    def label(self, key: Optional[str], workers: Optional[WorkerRegistry] = None, now: float = 0.0) -> str:
        """`key` itself if it is pinned or served, else `other` (`any` for none); `workers` answers for a key
        a worker serves since the last refresh."""
        if not key:
            return ANY
        if key in self.pinned or key in self._served_until:
            return key
        if workers is not None and workers.serves_key(key):
            self._served_until[key] = now + self.grace_s
            return key
        return OTHER

    def kept(self) -> frozenset[str]:
        """Labels whose series stay: served (or recently), pinned, `any` and `other`."""
        return self.pinned | frozenset(self._served_until) | {ANY, OTHER}
