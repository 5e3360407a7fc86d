"""RELOAD with `wait_ms`: the reply waits until each told worker is back, and says how each one did.

A worker told to reload finishes its jobs, leaves (DISCONNECT reason=reload), loads, and registers again
with a fresh socket, so it comes back under a new worker id. The broker recognises it by what does not
change: host, pid and name. Its READY carries `reload_error` (empty when the load worked; on failure it
keeps serving with its old engine). The reply lists every told worker as `reloaded`, `failed` (with the
error) or `missing` (not back within wait_ms: still finishing jobs, or dead).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Optional

from tts_protocol.constants import Command
from tts_protocol.messages import Ready, ReloadOutcome, ReloadReply

from tts_broker.hooks import Hook
from tts_broker.outbox import Outbox
from tts_broker.workers import WorkerRecord

log = logging.getLogger(__name__)

_Key = tuple[str, int, str]  # host, pid, name: one worker process across its re-registrations


def _key(ready: Ready) -> _Key:
    return ready.host, ready.pid, ready.name


@dataclasses.dataclass(slots=True)
class PendingReload:
    identity: bytes
    req_id: str
    deadline: float
    told: dict[_Key, ReloadOutcome]  # outcome "missing" until the worker is back

    @property
    def complete(self) -> bool:
        return all(o.outcome != "missing" for o in self.told.values())


class ReloadTracker(Hook):
    """Reloads waiting for their workers; a Hook for `worker_ready` and `tick` (the wait_ms timer)."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.pending: list[PendingReload] = []

    def wait(self, identity: bytes, req_id: str, workers: list[WorkerRecord], now: float, wait_s: float) -> None:
        told = {_key(w.ready): ReloadOutcome(worker_id=w.worker_id, name=w.ready.name, outcome="missing")
                for w in workers}
        pending = PendingReload(identity, req_id, now + wait_s, told)
        if pending.complete:  # nobody told: answer at once
            self._reply(pending)
        else:
            self.pending.append(pending)

    def worker_ready(self, ready: Ready) -> None:
        """A worker registered: if a pending reload told it, note how its reload went."""
        key = _key(ready)
        for pending in list(self.pending):
            old: Optional[ReloadOutcome] = pending.told.get(key)
            if old is None or old.outcome != "missing" or ready.worker_id == old.worker_id:
                continue
            pending.told[key] = ReloadOutcome(worker_id=old.worker_id, name=old.name,
                                              outcome="failed" if ready.reload_error else "reloaded",
                                              error=ready.reload_error, new_worker_id=ready.worker_id)
            if pending.complete:
                self.pending.remove(pending)
                self._reply(pending)

    def tick(self, now: float) -> None:
        for pending in [p for p in self.pending if now >= p.deadline]:
            self.pending.remove(pending)
            self._reply(pending)

    def _reply(self, pending: PendingReload) -> None:
        outcomes = list(pending.told.values())
        log.info("reload %s: %d reloaded, %d failed, %d missing", pending.req_id,
                 sum(o.outcome == "reloaded" for o in outcomes), sum(o.outcome == "failed" for o in outcomes),
                 sum(o.outcome == "missing" for o in outcomes))
        self.outbox.client(pending.identity, Command.RELOAD_REPLY,
                           ReloadReply(req_id=pending.req_id, workers=len(outcomes), waited=True, outcomes=outcomes))
