"""Takeover: the leases of the previous active broker that surviving workers still hold, adopted, not rerun.

A broker that takes over restores the journal as after a restart, except that the jobs the journal shows
running are not queued at once: they are held for `grace_s` (twice the time workers need to notice their
broker is gone and move to the next endpoint of their list). A worker that survived re-announces each lease
it still holds in READY (`running`: job_id, attempt); the broker leases the job to it again with that same
attempt, so the job is neither run twice nor counted as a new attempt, and the RESULT that follows completes
it. What nobody claims in time is queued like any restored job. A lease the broker cannot adopt (unknown
job, other attempt, already queued or run elsewhere, no free slot) is cancelled on that worker.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Iterable, Sequence

from tts_protocol import Command
from tts_protocol.constants import JobState
from tts_protocol.messages import CancelLease, LeaseRef

from tts_broker.jobs import Job
from tts_broker.workers import WorkerRecord

if TYPE_CHECKING:
    from tts_broker.lifecycle import Lifecycle

log = logging.getLogger(__name__)


class Adoption:
    """Restored running jobs waiting for their surviving worker to claim them."""

    def __init__(self, life: Lifecycle, *, grace_s: float) -> None:
        self.life = life
        self.grace_s = grace_s
        self.held: dict[str, Job] = {}
        self.until = 0.0
        self.adopted = 0

    def hold(self, job_ids: Iterable[str], now: float) -> None:
        """Take the restored jobs that were running out of the queue until `now + grace_s`."""
        life = self.life
        for job_id in job_ids:
            job = life.jobs.get(job_id)
            if job is not None and job.state is JobState.QUEUED and life.queue.remove(job):
                self.held[job_id] = job
        self.until = now + self.grace_s
        if self.held:
            log.info("takeover: %d jobs that were running wait %.1f s for their workers to claim them",
                     len(self.held), self.grace_s)

    def adopt(self, worker: WorkerRecord, running: Sequence[LeaseRef], now: float) -> None:
        """READY named leases the worker still holds: lease each job to it again, or cancel the lease there."""
        life = self.life
        for ref in running:
            job = self.held.get(ref.job_id)
            if job is None or job.attempt != ref.attempt or job.state is not JobState.QUEUED or \
                    worker.free_slots <= 0 or not worker.serves(job.model):
                log.info("job %s attempt %d: worker %s holds a lease this broker cannot adopt; cancelled there",
                         ref.job_id, ref.attempt, worker.worker_id)
                life.outbox.worker(worker.identity, Command.B_CANCEL, CancelLease(
                    job_id=ref.job_id, attempt=ref.attempt, reason="not adopted after a broker takeover"))
                continue
            del self.held[ref.job_id]
            job.attempt -= 1  # lease() counts the attempt again: the same lease, not a new one
            job.tries = max(0, job.tries - 1)
            outbox = life.outbox
            sent_now, sent_later = len(outbox.now), len(outbox.later)
            life.lease(worker, job, now)
            # Not its JOB: the worker has the job; a JOB would make it run the job again after answering it.
            del outbox.now[sent_now:]
            del outbox.later[sent_later:]
            self.adopted += 1
            log.info("job %s attempt %d: adopted from surviving worker %s", job.job_id, job.attempt,
                     worker.worker_id)

    def tick(self, now: float) -> None:
        """Queue what nobody claimed once the grace period is over."""
        if not self.held or now < self.until:
            return
        life = self.life
        for job in self.held.values():
            if job.state is JobState.QUEUED:
                life.queue.push(job, front=True)
        log.info("takeover: %d jobs unclaimed after %.1f s queued again", len(self.held), self.grace_s)
        self.held.clear()
        life.dirty = True
