"""Transitions: every change of a job, worker and lease, with no clock, socket or disk inside.

Each transition changes the job (through Job.move_to and the MOVES table in jobs.py), the queue, the worker
registry and the lease book together, then says what must happen as a consequence: messages go into the
Outbox (the server sends them; those that promise durability wait for the journal's commit) and events go
to the hooks through one `emit`. Time comes in as an argument (`now`, monotonic; `wall`, for the journal and
views). The core (core.py) calls these from its command tables and timers; unit tests call them directly.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from tts_protocol import ErrorCode
from tts_protocol import fastpack as fastpack
from tts_protocol.constants import Command, JobState, Priority
from tts_protocol.messages import (
    CancelLease,
    Disconnect,
    Error,
    ErrorInfo,
    Fail,
    Partial,
    Ready,
    Submit,
    WorkerResult,
)

from tts_broker.hooks import CachedAudio, Hooks
from tts_broker.jobs import Job, JobTable, payload_size, request_digest
from tts_broker.leases import LeaseBook
from tts_broker.outbox import Outbox
from tts_broker.queue import JobQueue
from tts_broker.settings import BrokerSettings
from tts_broker.workers import Lease, WorkerRecord, WorkerRegistry

log = logging.getLogger(__name__)


class Lifecycle:
    """The transitions of one broker's jobs, workers and leases (the state objects are the core's)."""

    def __init__(self, settings: BrokerSettings, *, jobs: JobTable, queue: JobQueue, workers: WorkerRegistry,
                 leases: LeaseBook, outbox: Outbox, hooks: Hooks) -> None:
        self.settings = settings
        self.jobs, self.queue, self.workers, self.leases = jobs, queue, workers, leases
        self.outbox, self.hooks = outbox, hooks
        self.dirty = False  # something changed that may allow a dispatch
        self.draining = False
        self.paused: set[str] = set()  # routing keys whose queued jobs are not dispatched (PAUSE_MODEL)
        self.lookups: dict[str, Job] = {}  # new jobs set aside until the server asked the hooks for an answer

    # ---- moves -------------------------------------------------------------------------------------

    def _move(self, job: Job, state: JobState) -> None:
        """The one place a transition moves a job; the end of an attempt is counted here."""
        if job.state is JobState.RUNNING and self.leases.end(job):
            self.dirty = True  # its client left max_client_running: its queued jobs may go now
        job.move_to(state)

    def _record(self, job: Job, *, new: bool = False) -> None:
        self.hooks.emit("recorded", job, new=new)

    def _finish(self, job: Job, now: float, *, new: bool = False) -> None:
        self.jobs.finish(job, now)
        self._record(job, new=new)

    # ---- client transitions ------------------------------------------------------------------------

    def find(self, job_id: str) -> Optional[Job]:
        """The job with this id: known, or new and set aside for the result cache this turn."""
        return self.jobs.get(job_id) or self.lookups.get(job_id)

    def submit(self, identity: bytes, req: Submit, now: float, wall: float, *, owner: Optional[str] = None,
               admin: bool = True) -> None:
        """SUBMIT: accept a new job, or attach the sender to the job that already has this id.

        `owner`: the submitter's CURVE key name (commands.py checks it before a resubmission attaches);
        `admin`: whether the sender holds an admin key (allow_high_priority = "admin"; every sender without CURVE).
        """
        job = self.find(req.job_id)
        if job is not None:
            if job.digest != request_digest(req):
                self.outbox.error(identity, ErrorCode.CONFLICT,
                                  f"job id {req.job_id} is taken by a job with a different request (text, speaker,"
                                  " model or voice); use a new id", job_id=req.job_id)
            elif req.job_id in self.lookups:
                job.subscribers.add(identity)  # it hears the answer with the first sender
            else:
                self.attach(identity, job, now, wall)
            return
        settings = self.settings
        if self.draining:
            self.outbox.error(identity, ErrorCode.SHUTTING_DOWN, "broker is draining", job_id=req.job_id)
            return
        if len(req.text) > settings.max_text_chars:
            self.outbox.error(identity, ErrorCode.BAD_REQUEST,
                              f"text has {len(req.text)} characters; the limit is {settings.max_text_chars}",
                              job_id=req.job_id)
            return
        if len(self.queue) >= settings.max_queue:
            self.outbox.error(identity, ErrorCode.QUEUE_FULL, f"queue is full ({settings.max_queue} jobs)",
                              job_id=req.job_id)
            return
        if settings.max_client_queued and self.queue.queued_by(identity) >= settings.max_client_queued:
            self.outbox.error(identity, ErrorCode.TOO_MANY_JOBS,
                              f"this client has {settings.max_client_queued} jobs queued (max_client_queued);"
                              " submit more as they finish", job_id=req.job_id)
            return
        job = Job(request=req, priority=self._priority_for(req, admin), model=req.model or settings.default_model,
                  accepted_at=now, accepted_wall=wall, client=identity,
                  deadline=now + req.deadline_ms / 1000 if req.deadline_ms else None, owner=owner)
        job.subscribers.add(identity)
        if self.hooks.may_answer(job):
            self.lookups[job.job_id] = job  # the server asks the result cache between turns: on_lookup
            return
        self._queue_new(job)

    def _priority_for(self, req: Submit, admin: bool) -> Priority:
        """The level a job is queued at: `high` only where allow_high_priority permits, else `normal`."""
        priority = Priority(req.priority)
        allowed = self.settings.allow_high_priority
        if priority is Priority.HIGH and (allowed == "none" or (allowed == "admin" and not admin)):
            log.info("job %s: priority high is not allowed for this client (allow_high_priority=%s); queued as"
                     " normal", req.job_id, allowed)
            return Priority.NORMAL
        return priority

    def _queue_new(self, job: Job) -> None:
        self.jobs.add(job)
        self.queue.push(job)
        self.dirty = True
        self._record(job, new=True)
        log.debug("job %s accepted (priority %s, model %s, %d chars)", job.job_id, job.priority.value, job.model,
                  len(job.request.text))
        for identity in job.subscribers:
            self.outbox.client(identity, Command.ACCEPTED, fastpack.accepted(job.job_id, job.state, len(self.queue),
                                                                             False), durable=True)

    def on_lookup(self, job: Job, hit: Optional[CachedAudio], now: float) -> None:
        """The hooks' answer for a job set aside by `submit`: finish it from the cache, or queue it."""
        self.lookups.pop(job.job_id, None)
        if hit is None:
            self._queue_new(job)
            return
        job.result = fastpack.result(job.job_id, 1, "cache", hit.engine, hit.model, hit.sample_rate, hit.channels,
                                     hit.sample_format, len(hit.pcm) // (2 * hit.channels), 0, 0,
                                     int((now - job.accepted_at) * 1000), True)
        self._move(job, JobState.DONE)
        job.audio, job.cached, job.started_at = hit.pcm, True, job.accepted_at
        job.attempt = job.tries = 1
        self.jobs.add(job)
        subscribers = list(job.subscribers)
        self._finish(job, now, new=True)  # a cache hit was never journaled
        log.debug("job %s answered from the result cache", job.job_id)
        for identity in subscribers:
            self.outbox.client(identity, Command.RESULT, job.result, hit.pcm)

    def attach(self, identity: bytes, job: Job, now: float, wall: float) -> None:
        """Idempotent resubmission: join the existing job, or get its final answer again.

        A job that ended with a retryable error (shutting_down, no_workers...) is not a final answer: the
        resubmission runs it again, so a client's retry works after a drain or a restart.
        """
        if job.state.finished and job.error is not None and job.error.retryable and not self.draining:
            code = job.error.code
            self.reopen(job, now, wall)
            log.info("job %s resubmitted after a retryable %s; queued again", job.job_id, code)
        if job.state is JobState.DONE and job.result:
            self.outbox.client(identity, Command.RESULT, job.result, job.audio)
        elif job.state.finished and job.error is not None:
            self.outbox.client(identity, Command.ERROR, error_body(job))
        else:
            job.subscribers.add(identity)
            self.outbox.client(identity, Command.ACCEPTED,
                               fastpack.accepted(job.job_id, job.state, len(self.queue), True))
        log.debug("job %s: resubmission attached (state %s)", job.job_id, job.state.value)

    def cancel(self, identity: bytes, job_id: str, now: float) -> None:
        """CANCEL: end a queued or running job; the sender hears the outcome like any subscriber."""
        job = self.jobs.get(job_id)
        if job is None:
            self.outbox.error(identity, ErrorCode.NOT_FOUND, f"no job {job_id}", job_id=job_id)
            return
        if job.state.finished:
            return
        job.subscribers.add(identity)
        self.fail(job, now, ErrorCode.CANCELLED, "cancelled by a client", cancel_reason="cancelled")

    def retry(self, job: Job, now: float, wall: float) -> Optional[str]:
        """RETRY: run a failed or cancelled job again; returns why not, or None when it was queued."""
        if job.state not in (JobState.FAILED, JobState.CANCELLED):
            return f"job {job.job_id} is {job.state.value}; only failed or cancelled jobs can be retried"
        self.reopen(job, now, wall)
        log.info("job %s retried by a client", job.job_id)
        return None

    def reopen(self, job: Job, now: float, wall: float) -> None:
        """Queue a finished job again as a fresh job with the same id (tries start again, attempt numbers go on)."""
        job.reset(now, wall)
        self.jobs.reopen(job)
        self.queue.push(job)
        self.dirty = True
        self._record(job, new=True)

    # ---- worker transitions ------------------------------------------------------------------------

    def worker_ready(self, identity: bytes, ready: Ready, now: float, *, key: Optional[str] = None) -> None:
        old = self.workers.get(identity)
        if old is not None:
            log.warning("worker %s sent READY again; resetting it", old.worker_id)
            self.worker_gone(old, "re-registered", now)
        self.hooks.emit("worker_ready", ready)  # a reload waiting for this worker hears how it went, even now
        if self.draining:
            self.outbox.worker(identity, Command.B_DISCONNECT, Disconnect(reason="broker is draining"))
            return
        if ready.capacity > self.settings.max_worker_capacity:
            log.warning("worker %s claims capacity %d; clamped to max_worker_capacity %d", ready.worker_id,
                        ready.capacity, self.settings.max_worker_capacity)
            ready = ready.model_copy(update={"capacity": self.settings.max_worker_capacity})
        self.workers.add(WorkerRecord(identity=identity, ready=ready, registered_at=now, last_seen=now, key=key))
        self.dirty = True
        log.info("worker %s ready: %s/%s on %s (%s pid %d), capacity %d", ready.worker_id, ready.engine,
                 ready.model, ready.device, ready.host, ready.pid, ready.capacity)

    def worker_gone(self, worker: WorkerRecord, why: str, now: float) -> None:
        """A worker left, died or re-registered: the jobs it held go back to the queue."""
        self.workers.remove(worker.identity)
        for job in worker.held_jobs():
            self.requeue(job, f"worker {worker.worker_id} {why} while running it", now)
        self.dirty = True

    def lease(self, worker: WorkerRecord, job: Job, now: float) -> None:
        """Start the next attempt of `job` (just taken from the queue) on `worker`; the JOB waits for the commit.

        The lease is recorded before its JOB goes out, so after a crash the attempt count is never behind
        and poison jobs still end.
        """
        job.attempt += 1
        job.tries += 1
        job.streamed_bytes = 0
        self._move(job, JobState.RUNNING)
        limit_s = self.leases.start(job, now)
        job.worker_id = worker.worker_id
        job.worker_identity = worker.identity
        job.started_at = job.started_at or now
        job.workers_tried.append(worker.worker_id)
        self.workers.lease(worker, (job.job_id, job.attempt), job)
        self._record(job)
        log.debug("job %s attempt %d -> worker %s", job.job_id, job.attempt, worker.worker_id)
        req = job.request
        self.outbox.worker(worker.identity, Command.B_JOB,
                           fastpack.job(job.job_id, job.attempt, req.text, req.speaker, job.model, req.voice,
                                        req.stream, int(limit_s * 1000)), durable=True)

    def complete(self, worker: WorkerRecord, body: WorkerResult, payload: Any, now: float) -> None:
        """W_RESULT: the job is done; every subscriber gets the result once the journal holds it."""
        job = self._end_attempt(worker, body.job_id, body.attempt)
        if job is None:
            return
        size = payload_size(payload)
        if size > self.settings.max_result_bytes:
            worker.jobs_failed += 1
            self.fail(job, now, ErrorCode.TOO_LARGE, f"worker {worker.worker_id} sent {size} bytes of audio; the"
                      f" limit is max_result_bytes = {self.settings.max_result_bytes}", retryable=False)
            return
        worker.jobs_done += 1
        self._move(job, JobState.DONE)
        job.audio = payload
        num_samples = size // (2 * body.channels)
        job.result = fastpack.result(
            job.job_id, body.attempt, worker.public_id, worker.ready.engine, worker.ready.model, body.sample_rate,
            body.channels, body.sample_format, num_samples, body.gen_time_ms,
            int(((job.started_at or now) - job.accepted_at) * 1000), int((now - job.accepted_at) * 1000),
        )
        for identity in job.subscribers:
            self.outbox.client(identity, Command.RESULT, job.result, payload, durable=True)
        log.debug("job %s done by %s (attempt %d, %d samples)", job.job_id, worker.worker_id, body.attempt,
                  num_samples)
        self._finish(job, now)
        self.hooks.emit("completed", job, worker, body)

    def partial(self, worker: WorkerRecord, body: Partial, payload: Any, now: float) -> None:
        """W_PARTIAL: forward a streamed chunk of a live lease to the job's subscribers."""
        job = self._held(worker, body.job_id, body.attempt)
        if job is None or not job.request.stream:
            return
        job.streamed_bytes += payload_size(payload)
        if job.streamed_bytes > self.settings.max_result_bytes:
            self.fail(job, now, ErrorCode.TOO_LARGE, f"worker {worker.worker_id} streamed more than"
                      f" max_result_bytes = {self.settings.max_result_bytes} bytes of audio",
                      cancel_reason="too_large", retryable=False)
            return
        for identity in job.subscribers:
            self.outbox.client(identity, Command.PARTIAL, body, payload)

    def worker_failed(self, worker: WorkerRecord, body: Fail, now: float) -> None:
        """W_FAIL: a retryable failure runs the job again elsewhere; any other ends it."""
        job = self._end_attempt(worker, body.job_id, body.attempt)
        if job is None:
            return
        worker.jobs_failed += 1
        log.info("job %s failed on worker %s (attempt %d): %s: %r", job.job_id, worker.worker_id, body.attempt,
                 body.code, body.message[:500])
        if body.retryable:
            self.requeue(job, f"worker {worker.worker_id} failed: {body.code}: {body.message}", now)
        else:
            # retryable=false is final whatever the code: a worker sending `internal` or `shutting_down`
            # with retryable=false must not make clients resubmit the job for ever.
            self.fail(job, now, ErrorCode.parse(body.code), body.message or body.code, worker_code=body.code,
                      retryable=False)

    def _end_attempt(self, worker: WorkerRecord, job_id: str, attempt: int) -> Optional[Job]:
        """The job whose live lease a final answer (RESULT, FAIL) ends, with the worker's slot freed."""
        job = self._held(worker, job_id, attempt)
        if job is not None:
            self.workers.release(worker, (job_id, attempt))
            self.dirty = True
        return job

    def _held(self, worker: WorkerRecord, job_id: str, attempt: int) -> Optional[Job]:
        """The job if `worker` holds this exact live lease; else None (a late or foreign answer)."""
        lease = (job_id, attempt)
        if lease not in worker.leases:
            log.warning("worker %s answered for job %s attempt %d it does not hold; dropped", worker.worker_id,
                        job_id, attempt)
            return None
        job = worker.leases[lease]
        if job is None:
            log.info("worker %s answered for revoked job %s attempt %d; dropped, slot freed", worker.worker_id,
                     job_id, attempt)
            self.workers.release(worker, lease)
            self.dirty = True
        return job

    # ---- shared transitions ------------------------------------------------------------------------

    def requeue(self, job: Job, why: str, now: float) -> None:
        """Put a job whose attempt ended without an answer back at the front, or end it as a poison job."""
        job.worker_id = None
        job.worker_identity = None
        job.lease_deadline = None
        if job.tries >= self.settings.max_attempts:
            tried = ", ".join(job.workers_tried[-8:])
            self.fail(job, now, ErrorCode.MAX_ATTEMPTS,
                      f"gave up after {job.tries} attempts (workers: {tried}); last: {why}")
            return
        log.info("job %s requeued after attempt %d: %s", job.job_id, job.attempt, why)
        self._move(job, JobState.QUEUED)
        self.queue.push(job, front=True)
        self.dirty = True

    def fail(self, job: Job, now: float, code: ErrorCode, message: str, *, cancel_reason: str = "",
             worker_code: str = "", retryable: Optional[bool] = None) -> None:
        """End a job with an error: drop it from the queue or revoke its lease, tell its subscribers.

        `retryable` overrides the code's own flag (a worker's retryable=false is final whatever its code).
        """
        if job.state is JobState.QUEUED:
            self.queue.remove(job)
        elif job.state is JobState.RUNNING and job.worker_identity is not None:
            self.revoke(job, cancel_reason or code.value)
        self._move(job, JobState.CANCELLED if code is ErrorCode.CANCELLED else JobState.FAILED)
        job.error = ErrorInfo(code=worker_code or code.value, message=message[:4096],
                              retryable=code.retryable if retryable is None else retryable)
        error = error_body(job)
        for identity in job.subscribers:
            self.outbox.client(identity, Command.ERROR, error)
        log.info("job %s %s: %s: %s", job.job_id, job.state.value, job.error.code, message)
        self._finish(job, now)

    def revoke(self, job: Job, reason: str) -> None:
        """Cancel the running attempt: the lease stops counting, its slot stays busy until the worker answers."""
        worker = self.workers.get(job.worker_identity) if job.worker_identity else None
        lease: Lease = (job.job_id, job.attempt)
        if worker is not None and worker.leases.get(lease) is job:
            self.workers.revoke(worker, lease)
            self.outbox.worker(worker.identity, Command.B_CANCEL,
                               CancelLease(job_id=job.job_id, attempt=job.attempt, reason=reason))


def error_body(job: Job) -> Error:
    assert job.error is not None
    return Error(job_id=job.job_id, code=job.error.code, message=job.error.message, retryable=job.error.retryable)
