"""Dispatch: the one meaning of the word in this broker, giving queued jobs to free worker slots.

The least recently used free worker goes first, as before, but it is found per routing key that has queued
jobs (WorkerRegistry.first_free), never by walking every free worker: one dispatch costs O(keys queued + jobs
leased), whether 10 or 10,000 workers are connected. Each round either leases at least one job or marks the
keys a worker serves as exhausted for this dispatch (every job on them paused, or its client at its cap).
Draining workers that hold no lease are told to leave here too, and admin commands pause and resume keys.
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

from tts_protocol.constants import Command
from tts_protocol.messages import Disconnect

from tts_broker.lifecycle import Lifecycle
from tts_broker.workers import WorkerRecord

log = logging.getLogger(__name__)


class Dispatcher:
    """Leases queued jobs to free workers, and steers that (drained workers, paused keys)."""

    def __init__(self, life: Lifecycle) -> None:
        self.life = life
        self.queue = life.queue
        self.workers = life.workers
        self.settings = life.settings

    def dispatch(self, now: float) -> None:
        """Give queued jobs to free worker slots, least recently used workers first."""
        life = self.life
        life.dirty = False
        self.retire_drained(now)
        queue, workers, paused = self.queue, self.workers, life.paused
        exhausted: set[Optional[str]] = set()
        while len(queue):
            worker = None
            for key in queue.keys():
                if key in exhausted or key in paused:
                    continue
                candidate = workers.first_free(key)
                if candidate is not None and (worker is None or candidate.free_seq < worker.free_seq):
                    worker = candidate
            if worker is None:
                return
            served = [k for k in worker.served_keys if k not in paused] if paused else worker.served_keys
            took = False
            while worker.free_slots > 0:
                job = queue.take_for(served, warm=worker.warm, now=now,
                                     sticky_max_wait_s=self.settings.sticky_max_wait_s,
                                     blocked=life.leases.at_running_cap)
                if job is None:
                    break
                life.lease(worker, job, now)
                took = True
            if worker.free_slots > 0 or not took:
                exhausted.update(worker.served_keys)  # nothing more it may take: its keys are done this round

    # ---- admin: drain a worker, pause a model ------------------------------------------------------

    def drain_workers(self, workers: Sequence[WorkerRecord], now: float) -> None:
        """DRAIN_WORKER: no new leases for these workers; each leaves once it holds no lease."""
        for worker in workers:
            if not worker.draining:
                log.info("worker %s draining: no new jobs, %d in hand", worker.worker_id, len(worker.leases))
            self.workers.drain(worker)
        self.retire_drained(now)

    def retire_drained(self, now: float) -> None:
        """Tell draining workers that hold no lease to leave (B_DISCONNECT `drained`) and forget them."""
        for worker in self.workers.drained():
            log.info("worker %s drained: disconnecting it", worker.worker_id)
            self.life.outbox.worker(worker.identity, Command.B_DISCONNECT, Disconnect(reason="drained"))
            self.life.worker_gone(worker, "drained", now)

    def pause(self, key: str) -> None:
        if key not in self.life.paused:
            log.info("dispatch of model %s paused (%d queued jobs wait)", key,
                     sum(1 for _ in self.queue.jobs_for_key(key)))
        self.life.paused.add(key)

    def resume(self, key: str) -> None:
        if key in self.life.paused:
            log.info("dispatch of model %s resumed", key)
            self.life.paused.discard(key)
            self.life.dirty = True
