"""Jobs the broker knows: their state, who waits for them, and how long finished ones are kept."""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import heapq
import itertools
from typing import Any, Iterable, Iterator, Optional

import msgpack

from tts_protocol.constants import JobState, Priority
from tts_protocol.messages import ErrorInfo, JobView, Submit


def request_digest(req: Submit) -> bytes:
    """What a job says, as a digest: text, speaker, model and voice settings (PROTOCOL.md section 3).

    A resubmission of a known job id must carry the same content, or it is refused with `conflict`;
    delivery options (priority, deadline, timeout, stream, cache) may differ.
    """
    content = [req.text, req.speaker, req.model, sorted(req.voice.items())]
    return hashlib.blake2b(msgpack.packb(content, use_bin_type=True), digest_size=16).digest()


def payload_size(payload: Any) -> int:
    """Bytes of audio in a payload: None, bytes, or the zmq.Frame it arrived in (read without copying)."""
    if payload is None:
        return 0
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return len(payload)
    return len(payload.buffer)


#: Every legal move of a job, from its state to the states it may take next. Job.move_to is the only place
#: a job's state changes; anything else is a bug and raises IllegalMove.
#:
#:     QUEUED ──lease──▶ RUNNING ──complete──▶ DONE
#:       │ ▲               │ │
#:       │ └── requeue ────┘ └── fail, cancel, deadline ──▶ FAILED, CANCELLED ── retry, reopen ──▶ QUEUED
#:       └── cache hit ──▶ DONE;  fail, cancel, deadline, unroutable ──▶ FAILED, CANCELLED
MOVES: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.DONE, JobState.FAILED, JobState.CANCELLED}),
    JobState.RUNNING: frozenset({JobState.QUEUED, JobState.DONE, JobState.FAILED, JobState.CANCELLED}),
    JobState.DONE: frozenset(),
    JobState.FAILED: frozenset({JobState.QUEUED}),
    JobState.CANCELLED: frozenset({JobState.QUEUED}),
}


class IllegalMove(RuntimeError):
    """A transition asked a job for a move MOVES does not allow (a broker bug, never a peer's fault)."""


@dataclasses.dataclass(slots=True, eq=False)
class Job:
    """One accepted job. Mutable: the broker moves it through its states."""

    request: Submit
    priority: Priority
    model: Optional[str]
    accepted_at: float  # monotonic
    accepted_wall: float = 0.0  # time.time(), for the journal and views
    deadline: Optional[float] = None  # monotonic, whole job
    state: JobState = JobState.QUEUED
    attempt: int = 0  # number of the current (or last) lease; never goes back, so a lease is unique for ever
    tries: int = 0  # attempts since the job was accepted or last reopened (what max_attempts counts)
    client: bytes = b""  # routing id of the submitter: the fairness key (restored jobs share b"")
    worker_id: Optional[str] = None
    worker_identity: Optional[bytes] = None
    lease_deadline: Optional[float] = None
    started_at: Optional[float] = None
    finished_at: Optional[float] = None
    queue_seq: int = 0
    subscribers: set[bytes] = dataclasses.field(default_factory=set)
    result: bytes = b""  # packed RESULT body, kept so a resubmission gets the same answer
    audio: Any = None  # zmq.Frame or bytes of the whole utterance
    error: Optional[ErrorInfo] = None
    workers_tried: list[str] = dataclasses.field(default_factory=list)
    cached: bool = False  # answered from the result cache
    digest: bytes = b""  # request_digest(request), for idempotency bound to content
    streamed_bytes: int = 0  # PARTIAL audio forwarded for the current attempt

    def __post_init__(self) -> None:
        if not self.digest:
            self.digest = request_digest(self.request)
    owner: Optional[str] = None  # CURVE key name of the submitter (None without CURVE); see auth.py

    @property
    def job_id(self) -> str:
        return self.request.job_id

    def move_to(self, state: JobState) -> None:
        """Change state along a legal move (MOVES); raises IllegalMove otherwise."""
        if state not in MOVES[self.state]:
            raise IllegalMove(f"job {self.job_id}: no move from {self.state.value} to {state.value}")
        self.state = state

    @property
    def audio_bytes(self) -> int:
        return payload_size(self.audio)

    def audio_data(self) -> bytes:
        """The utterance as bytes, whether it is still the worker's zero-copy frame or was read back."""
        if self.audio is None:
            return b""
        return self.audio if isinstance(self.audio, bytes) else bytes(self.audio.buffer)

    def reset(self, now: float, wall: float) -> None:
        """Make a finished job a fresh queued one with the same id (RETRY, or resubmission after a retryable error).

        The attempt number keeps counting (a late answer to an old lease can never match a new one); the
        tries counted against max_attempts start again.
        """
        self.move_to(JobState.QUEUED)
        self.tries, self.error, self.streamed_bytes = 0, None, 0
        self.worker_id, self.worker_identity, self.lease_deadline = None, None, None
        self.workers_tried, self.started_at, self.finished_at = [], None, None
        self.accepted_at, self.accepted_wall = now, wall
        self.deadline = now + self.request.deadline_ms / 1000 if self.request.deadline_ms else None

    def view(self, now: float) -> JobView:
        run_ms = None
        if self.started_at is not None:
            run_ms = int(((self.finished_at or now) - self.started_at) * 1000)
        return JobView(
            job_id=self.job_id,
            state=self.state,
            attempt=self.attempt,
            priority=self.priority,
            model=self.model,
            worker_id=self.worker_id,
            queued_ms=int(((self.started_at or self.finished_at or now) - self.accepted_at) * 1000),
            run_ms=run_ms,
            error=self.error,
            workers=self.workers_tried[-1024:],
            accepted_at_ms=int(self.accepted_wall * 1000),
            cached=self.cached,
        )


class JobTable:
    """All live jobs by id, plus finished ones retained for a while (bounded by age, count and bytes).

    Retention is what makes resubmission idempotent after a job finished: the same job id gets the same
    result instead of a second synthesis.
    """

    def __init__(self, *, ttl_s: float, max_jobs: int, max_bytes: int) -> None:
        self._live: dict[str, Job] = {}
        self._finished: collections.OrderedDict[str, Job] = collections.OrderedDict()
        self._finished_bytes = 0
        self._ttl_s = ttl_s
        self._max_jobs = max_jobs
        self._max_bytes = max_bytes
        self.done_total = 0
        self.failed_total = 0
        self.evicted = 0  # finished jobs dropped before their ttl to stay within max_jobs / max_bytes
        self.evicted_bytes = 0
        self._deadlines: list[tuple[float, str]] = []  # whole-job deadlines of live jobs, checked lazily

    def get(self, job_id: str) -> Optional[Job]:
        return self._live.get(job_id) or self._finished.get(job_id)

    def add(self, job: Job) -> None:
        self._live[job.job_id] = job
        self._watch_deadline(job)

    def _watch_deadline(self, job: Job) -> None:
        if job.deadline is not None and not job.state.finished:
            heapq.heappush(self._deadlines, (job.deadline, job.job_id))

    def past_deadline(self, now: float) -> list[Job]:
        """Live jobs whose whole-job deadline passed (entries of reopened jobs' old deadlines are skipped)."""
        heap, due = self._deadlines, []
        while heap and heap[0][0] <= now:
            _, job_id = heapq.heappop(heap)
            job = self._live.get(job_id)
            if job is not None and not job.state.finished and job.deadline is not None and job.deadline <= now:
                due.append(job)
        return due

    def finish(self, job: Job, now: float) -> None:
        """Move a job that reached a final state into retention."""
        self._live.pop(job.job_id, None)
        job.finished_at = now
        job.subscribers.clear()
        if job.state is JobState.DONE:
            self.done_total += 1
        else:
            self.failed_total += 1
        if self._max_jobs == 0 or self._ttl_s == 0:
            return
        self._finished[job.job_id] = job
        self._finished_bytes += job.audio_bytes
        self._trim(now)

    def retain(self, job: Job) -> None:
        """Keep a finished job restored from the journal (no counters touched)."""
        self._finished[job.job_id] = job
        self._finished_bytes += job.audio_bytes

    def reopen(self, job: Job) -> None:
        """Take a finished job out of retention so it can run again (RETRY)."""
        if self._finished.pop(job.job_id, None) is not None:
            self._finished_bytes -= job.audio_bytes
        self._live[job.job_id] = job
        self._watch_deadline(job)

    def recent(self, state: Optional[JobState], limit: int, *, owner: Optional[str] = None) -> list[Job]:
        """Newest jobs first, live and retained, optionally of one state and of one owner."""
        pool: Iterable[Job] = itertools.chain(self._live.values(), self._finished.values())
        if state is not None:
            pool = (job for job in pool if job.state is state)
        if owner is not None:
            pool = (job for job in pool if job.owner == owner)
        return heapq.nlargest(limit, pool, key=lambda job: job.accepted_at)

    def latest(self, limit: int, state: Optional[JobState] = None, *, scan: int = 5_000) -> list[Job]:
        """Newest jobs first, like `recent`, but looking only at the `scan` latest live and retained jobs each.

        For views refreshed every fraction of a second (the dashboard): the cost stays bounded however many
        finished jobs are retained. A job of `state` older than the scanned ones is not listed.
        """
        pool: list[Job] = []
        for table in (self._live, self._finished):
            found = 0
            for job in itertools.islice(reversed(table.values()), scan):
                if state is None or job.state is state:
                    pool.append(job)
                    found += 1
                    if found >= limit:
                        break
        return heapq.nlargest(limit, pool, key=lambda job: job.accepted_at)

    def expire(self, now: float) -> None:
        self._trim(now)

    def _trim(self, now: float) -> None:
        finished = self._finished
        while finished:
            job_id, oldest = next(iter(finished.items()))
            too_old = now - (oldest.finished_at or now) > self._ttl_s
            if not (too_old or len(finished) > self._max_jobs or self._finished_bytes > self._max_bytes):
                break
            finished.popitem(last=False)
            self._finished_bytes -= oldest.audio_bytes
            if not too_old:
                self.evicted += 1
                self.evicted_bytes += oldest.audio_bytes

    def live(self) -> Iterator[Job]:
        return iter(list(self._live.values()))

    @property
    def live_count(self) -> int:
        return len(self._live)

    @property
    def retained_count(self) -> int:
        return len(self._finished)

    @property
    def retained_bytes(self) -> int:
        return self._finished_bytes

