"""Dispatch: queued jobs to free worker slots, leases, draining workers and paused models.

A mixin of Lifecycle (lifecycle.py), which owns the state these methods change; kept apart because this is
the hot path (one `lease` per job) and the part the admin commands steer.
"""

from __future__ import annotations

import collections
import heapq
import logging
from typing import TYPE_CHECKING, Sequence

from tts_protocol import fastpack
from tts_protocol.constants import Command, JobState
from tts_protocol.messages import Disconnect

from tts_broker.jobs import Job
from tts_broker.outbox import Outbox
from tts_broker.queue import JobQueue
from tts_broker.settings import BrokerSettings
from tts_broker.workers import WorkerRecord, WorkerRegistry

log = logging.getLogger(__name__)


class Dispatching:
    """Lifecycle's dispatch transitions (see the module docstring)."""

    if TYPE_CHECKING:  # state and transitions that Lifecycle defines
        settings: BrokerSettings
        queue: JobQueue
        workers: WorkerRegistry
        outbox: Outbox
        dirty: bool
        paused: set[str]
        in_flight: collections.Counter[bytes]
        at_running_cap: set[bytes]
        lease_deadlines: list[tuple[float, str, int]]

        def _record(self, job: Job, *, new: bool = False) -> None: ...
        def worker_gone(self, worker: WorkerRecord, why: str) -> None: ...

    # ---- dispatch ----------------------------------------------------------------------------------

    def dispatch(self, now: float) -> None:
        """Give queued jobs to free worker slots, least recently used workers first.

        Leases are recorded before their JOB goes out (it waits for the commit), so after a crash the attempt
        count is never behind and poison jobs still end.
        """
        self.dirty = False
        self.retire_drained()
        if not len(self.queue):
            return
        settings = self.settings
        paused = self.paused
        for worker in self.workers.free_workers():
            served = [k for k in worker.served_keys if k not in paused] if paused else worker.served_keys
            while worker.free_slots > 0:
                job = self.queue.take_for(served, warm=worker.warm, now=now,
                                          sticky_max_wait_s=settings.sticky_max_wait_s,
                                          blocked=self.at_running_cap)
                if job is None:
                    break
                self.outbox.worker(worker.identity, Command.B_JOB, self.lease(worker, job, now), durable=True)
            if not len(self.queue):
                break

    def lease(self, worker: WorkerRecord, job: Job, now: float) -> bytes:
        """Start the next attempt of `job` on `worker`; returns the packed JOB body."""
        job.attempt += 1
        job.tries += 1
        job.streamed_bytes = 0
        job.state = JobState.RUNNING
        self.in_flight[job.client] += 1
        cap = self.settings.max_client_running
        if cap and self.in_flight[job.client] >= cap:
            self.at_running_cap.add(job.client)
        job.worker_id = worker.worker_id
        job.worker_identity = worker.identity
        job.started_at = job.started_at or now
        job.workers_tried.append(worker.worker_id)
        req = job.request
        limit_s = req.timeout_ms / 1000 if req.timeout_ms else self.settings.job_timeout_s
        if job.deadline is not None:
            limit_s = min(limit_s, max(job.deadline - now, 0.001))
        job.lease_deadline = now + limit_s
        heapq.heappush(self.lease_deadlines, (job.lease_deadline, job.job_id, job.attempt))
        self.workers.lease(worker, (job.job_id, job.attempt), job)
        self._record(job)
        log.debug("job %s attempt %d -> worker %s", job.job_id, job.attempt, worker.worker_id)
        return fastpack.job(job.job_id, job.attempt, req.text, req.speaker, job.model, req.voice, req.stream,
                            int(limit_s * 1000))

    # ---- admin: drain a worker, pause a model ------------------------------------------------------

    def drain_workers(self, workers: Sequence[WorkerRecord]) -> None:
        """DRAIN_WORKER: no new leases for these workers; each leaves once it holds no lease."""
        for worker in workers:
            if not worker.draining:
                log.info("worker %s draining: no new jobs, %d in hand", worker.worker_id, len(worker.leases))
            self.workers.drain(worker)
        self.retire_drained()

    def retire_drained(self) -> None:
        """Tell draining workers that hold no lease to leave (B_DISCONNECT `drained`) and forget them."""
        for worker in self.workers.drained():
            log.info("worker %s drained: disconnecting it", worker.worker_id)
            self.outbox.worker(worker.identity, Command.B_DISCONNECT, Disconnect(reason="drained"))
            self.worker_gone(worker, "drained")

    def pause(self, key: str) -> None:
        if key not in self.paused:
            log.info("dispatch of model %s paused (%d queued jobs wait)", key, sum(1 for _ in
                                                                                 self.queue.jobs_for_key(key)))
        self.paused.add(key)

    def resume(self, key: str) -> None:
        if key in self.paused:
            log.info("dispatch of model %s resumed", key)
            self.paused.discard(key)
            self.dirty = True
