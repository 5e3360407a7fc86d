"""The client's unfinished jobs and what it does for them: PROTOCOL.md section 9, the retry policy, as code.

A JobTracker lives on the client's I/O thread. It resubmits a job under its own job_id when the broker
restarted or came back, when the job went quiet, and after a retryable ERROR (backoff from tts_client.retry,
RETRY first), until the call's timeout; it completes each job's Future exactly once and drops what comes later.
"""

from __future__ import annotations

import itertools
import logging
from concurrent.futures import Future
from typing import Callable, Optional

from tts_protocol import Command, ErrorCode, encode
from tts_protocol.messages import Accepted, CancelJob, Error, Partial, Result, RetryJob, Submit

from tts_client.errors import ClientTimeout, InvalidRequest, JobCancelled, JobTimeout, job_error
from tts_client.pending import AcceptedHook, ChunkSink, PendingJob, settle
from tts_client.results import AudioChunk, SynthesisResult
from tts_client.settings import ClientSettings

log = logging.getLogger(__name__)

_RETRY_PREFIX = "retry-"

Send = Callable[[list[bytes]], None]
TimeoutFactory = Callable[[str, float], ClientTimeout]


class JobTracker:
    """Every job this client submitted and has not yet answered, keyed by job_id (I/O thread only)."""

    def __init__(self, settings: ClientSettings, send: Send, timeout_error: TimeoutFactory) -> None:
        self.settings = settings
        self._send = send
        self._timeout_error = timeout_error
        self._jobs: dict[str, PendingJob] = {}
        self._retry_seq = itertools.count(1)

    def __len__(self) -> int:
        return len(self._jobs)

    def start(self, request: Submit, future: Future, timeout_s: float, sink: Optional[ChunkSink],
              now: float, on_accepted: Optional[AcceptedHook] = None) -> None:
        """Track a new job and send its SUBMIT."""
        job_id = request.job_id
        if future.done():
            return
        if job_id in self._jobs:
            settle(future, error=InvalidRequest(f"job {job_id} is already in flight in this client"))
            return
        deadline = now + timeout_s if timeout_s > 0 else None
        job = PendingJob(request=request, future=future, sink=sink, deadline=deadline, last_heard=now, started=now,
                         on_accepted=on_accepted)
        self._jobs[job_id] = job
        self._submit(job, now)

    def cancel(self, job_id: str) -> None:
        """The caller cancels: tell the broker; settle at once if the broker may never have seen the job."""
        job = self._jobs.get(job_id)
        if job is not None:
            job.cancel_requested = True
            if not job.heard_any or job.retry_at is not None:
                # A later ERROR (cancelled or not_found) is then a duplicate and dropped.
                self._jobs.pop(job_id)
                settle(job.future, error=JobCancelled(ErrorCode.CANCELLED.value, "cancelled by this client",
                                                      job_id=job_id))
        self._send(encode(Command.CANCEL, CancelJob(job_id=job_id)))

    def resubmit_all(self, why: str, now: float, *, new_broker: bool) -> None:
        """The broker restarted (new_broker) or answers again after a silence: resubmit every unfinished job,
        also one waiting for a retry (its error came from a broker that may be gone)."""
        live = [job for job in self._jobs.values() if not job.cancel_requested]
        if live:
            log.info("%s; resubmitting %d unfinished jobs", why, len(live))
        for job in live:
            if new_broker:
                job.forget_attempts()
            self._submit(job, now)

    # ---- replies from the broker ----------------------------------------------------------------------

    def on_accepted(self, body: Accepted, now: float) -> None:
        job = self._heard(body.job_id, now)
        if job is None:
            return
        try:
            job.accepted()
        except Exception:
            log.exception("job %s: the ACCEPTED callback failed", body.job_id)
        log.debug("job %s accepted: state=%s queue_depth=%d duplicate=%s", body.job_id, body.state.value,
                  body.queue_depth, body.duplicate)

    def on_partial(self, body: Partial, payload: bytes, now: float) -> None:
        job = self._heard(body.job_id, now)
        if job is None:
            return
        chunk = job.accept_partial(body, payload)
        if chunk is not None:
            self._deliver(job, chunk)

    def on_result(self, body: Result, payload: bytes) -> None:
        job = self._jobs.pop(body.job_id, None)
        if job is None:
            log.debug("job %s: duplicate or unknown RESULT dropped", body.job_id)
            return
        try:
            job.fire_accepted()  # a finished job is answered with RESULT at once, without ACCEPTED
        except Exception:
            log.exception("job %s: the ACCEPTED callback failed", body.job_id)
        tail = job.tail_chunk(body, payload)
        if tail is not None:
            self._deliver(job, tail)
        settle(job.future, result=SynthesisResult.from_message(body, payload))

    def on_error(self, body: Error, now: float) -> None:
        """An ERROR about a job: retry it if retryable (section 9), else fail the job with the remote code."""
        job = self._heard(body.job_id, now) if body.job_id is not None else None
        if job is None:
            if body.job_id is None and body.req_id is None:
                log.warning("broker reported an error: %s %s", body.code, body.message)
            return
        if body.retryable and not job.cancel_requested:
            job.schedule_retry(now, body, initial_s=self.settings.retry_backoff_initial_s,
                               cap_s=self.settings.retry_backoff_max_s)
            log.debug("job %s: retryable %s, retry %d in %.2fs", job.job_id, body.code, job.retries,
                      (job.retry_at or now) - now)
            return
        self._jobs.pop(job.job_id)
        code = body.code
        if job.cancel_requested and code == ErrorCode.NOT_FOUND.value:
            code = ErrorCode.CANCELLED.value
        settle(job.future, error=job_error(code, body.message, retryable=body.retryable, job_id=job.job_id))

    # ---- time ------------------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Time out calls, send due retries, resubmit jobs the broker has said nothing about for too long."""
        resubmit_after_s = self.settings.resubmit_after_s
        for job in list(self._jobs.values()):
            if job.future.done():  # cancelled by its caller; the done-callback queued a CANCEL
                self._jobs.pop(job.job_id, None)
            elif job.deadline is not None and now >= job.deadline:
                self._jobs.pop(job.job_id)
                self._time_out(job, now)
            elif job.cancel_requested:
                continue
            elif job.retry_at is not None:
                if now >= job.retry_at:
                    self._submit(job, now)
            elif now - job.last_heard >= resubmit_after_s:
                log.debug("job %s: nothing heard for %.1fs, resubmitting", job.job_id, now - job.last_heard)
                self._submit(job, now)

    def fail_unanswered(self, now: float, broker_heard: float, connect_timeout_s: float,
                        error: Callable[[str], Exception]) -> None:
        """Fail every job that has waited connect_timeout_s while the broker said nothing at all (it never
        answered this client, or went silent at broker_heard): BrokerUnavailable now, not at the call's timeout.
        The job is also cancelled at the broker, which may come back and would otherwise run it for nobody."""
        for job in list(self._jobs.values()):
            if now - max(job.started, broker_heard) < connect_timeout_s:
                continue
            self._jobs.pop(job.job_id)
            if self.settings.cancel_on_timeout:
                self._send(encode(Command.CANCEL, CancelJob(job_id=job.job_id)))
            settle(job.future, error=error(f"job {job.job_id}"))

    def fail_all(self, error: Exception) -> None:
        for job in self._jobs.values():
            settle(job.future, error=error)
        self._jobs.clear()

    # ---- internals -------------------------------------------------------------------------------------

    def _heard(self, job_id: str, now: float) -> Optional[PendingJob]:
        job = self._jobs.get(job_id)
        if job is not None:
            job.heard_any = True
            job.last_heard = now
        return job

    def _submit(self, job: PendingJob, now: float) -> None:
        """Send (or resend: same job_id, so the broker attaches instead of duplicating) the job's SUBMIT."""
        job.retry_at = None
        job.last_heard = now
        if job.last_error is not None and job.last_error.retryable:
            # A broker may hold the job as failed with that retryable error (a journal keeps it across a
            # restart) and answer a plain SUBMIT with the same error. RETRY requeues such a job (or fails
            # harmlessly, answered by req_id); the SUBMIT behind it then attaches to it or creates it.
            self._send(encode(Command.RETRY, RetryJob(req_id=f"{_RETRY_PREFIX}{next(self._retry_seq)}",
                                                      job_id=job.job_id)))
        self._send(encode(Command.SUBMIT, job.request))

    def _time_out(self, job: PendingJob, now: float) -> None:
        """The call's timeout passed: fail with the last retryable error if the job was waiting to retry it,
        else with a timeout, and CANCEL it at the broker (it may be queued or running for nobody)."""
        if job.last_error is not None:
            err = job.last_error
            settle(job.future, error=job_error(err.code, f"{err.message} (gave up at the call's timeout)",
                                               retryable=err.retryable, job_id=job.job_id))
            return
        if self.settings.cancel_on_timeout:
            self._send(encode(Command.CANCEL, CancelJob(job_id=job.job_id)))
        error = self._timeout_error(f"job {job.job_id} did not finish in time", now)
        if isinstance(error, JobTimeout):
            error.job_id = job.job_id
        settle(job.future, error=error)

    def _deliver(self, job: PendingJob, chunk: AudioChunk) -> None:
        if job.sink is None:
            return
        try:
            job.sink(chunk)
        except Exception:
            log.exception("job %s: stream consumer failed; stopping its stream", job.job_id)
            job.sink = None
