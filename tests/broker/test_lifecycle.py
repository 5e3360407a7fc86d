"""The job lifecycle in-process: every transition, what it queues in the outbox and what it records.

No sockets: the core (BrokerCore, its transitions in core.life) is driven directly with explicit times, and
the outbox and a recording hook are read back. The process-level broker tests (test_broker*.py) check the same
behaviour over real sockets.
"""

from __future__ import annotations

from typing import Any, Optional

import msgpack
import pytest

from tts_protocol import Command, ErrorCode
from tts_protocol.constants import JobState
from tts_protocol.messages import Fail, Partial, Ready, Submit, WorkerResult

from tts_broker.core import BrokerCore
from tts_broker.hooks import CachedAudio, Hook
from tts_broker.jobs import Job
from tts_broker.settings import BrokerSettings
from tts_broker.workers import WorkerRecord

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]

C1, C2, W1, W2 = b"client-1", b"client-2", b"worker-1", b"worker-2"


class Recorder(Hook):
    durable = True

    def __init__(self) -> None:
        self.records: list[tuple[str, JobState, int, bool]] = []
        self.completed_jobs: list[str] = []
        self.reloads: list[Optional[str]] = []
        self.answers: dict[str, CachedAudio] = {}

    def recorded(self, job: Job, *, new: bool) -> None:
        self.records.append((job.job_id, job.state, job.attempt, new))

    def may_answer(self, job: Job) -> bool:
        return job.request.text in self.answers

    def lookup(self, job: Job) -> Optional[CachedAudio]:
        return self.answers.get(job.request.text)

    def completed(self, job: Job, worker: WorkerRecord, body: WorkerResult) -> None:
        self.completed_jobs.append(job.job_id)

    def reloaded(self, model: Optional[str]) -> None:
        self.reloads.append(model)


def settings(**over: Any) -> BrokerSettings:
    base: dict[str, Any] = {"max_attempts": 3, "max_queue": 100, "max_text_chars": 100, "job_timeout_s": 10.0,
                            "heartbeat_interval_s": 1.0, "heartbeat_liveness": 3, "result_ttl_s": 60.0}
    return BrokerSettings(_env_file=None, **{**base, **over})  # type: ignore[call-arg]


def make(hook: Optional[Hook] = None, **over: Any) -> BrokerCore:
    return BrokerCore(settings(**over), [hook] if hook else [])


def join(life: BrokerCore, identity: bytes = W1, capacity: int = 1, now: float = 0.0, **ready: Any) -> WorkerRecord:
    life.life.worker_ready(identity, Ready(worker_id=identity.decode(), engine="tone", model="v1", capacity=capacity,
                                      **ready), now)
    worker = life.workers.get(identity)
    assert worker is not None
    return worker


def sent(life: BrokerCore) -> list[tuple[bool, bytes, Command, Any]]:
    """Everything queued in the outbox (now, then later), as (to_worker, identity, command, body); cleared."""
    out = [(w, i, c, b) for w, i, c, b, _ in life.outbox.now + life.outbox.later]
    life.outbox.now.clear()
    life.outbox.later.clear()
    return out


def commands(life: BrokerCore) -> list[tuple[bytes, Command]]:
    return [(identity, command) for _, identity, command, _ in sent(life)]


def unpack(body: Any) -> dict[str, Any]:
    return msgpack.unpackb(body, raw=False) if isinstance(body, bytes) else body.to_wire()


def read_cache(life: BrokerCore, now: float = 0.0) -> None:
    """The I/O step the server performs between turns: the hooks' stored answers for jobs set aside."""
    for job in life.pending_lookups():
        life.on_lookup(job, life.hooks.lookup(job), now)


def submit(life: BrokerCore, job_id: str = "j1", identity: bytes = C1, now: float = 0.0, **fields: Any) -> None:
    admin = fields.pop("admin", True)
    life.life.submit(identity, Submit(job_id=job_id, text=fields.pop("text", "hello"), **fields), now, now,
                     admin=admin)


def result(job_id: str = "j1", attempt: int = 1) -> WorkerResult:
    return WorkerResult(job_id=job_id, attempt=attempt, sample_rate=16000)


def failed(life: BrokerCore, worker: WorkerRecord, body: Fail, now: float = 0.0) -> None:
    life.life.worker_failed(worker, body, now)


def cancel(life: BrokerCore, identity: bytes, job_id: str, now: float = 0.0) -> None:
    life.life.cancel(identity, job_id, now)


def retry(life: BrokerCore, job: Job, now: float) -> Optional[str]:
    return life.life.retry(job, now, now)


def test_submit_lease_complete_sends_accepted_job_result_and_records_each_step() -> None:
    hook = Recorder()
    life = make(hook)
    worker = join(life)
    sent(life)
    submit(life, now=1.0)
    assert life.outbox.now == []  # ACCEPTED promises durability: it waits for the commit
    assert [(i, c) for _, i, c, _, _ in life.outbox.later] == [(C1, Command.ACCEPTED)]
    sent(life)
    life.dispatch(1.0)
    [(to_worker, identity, command, body)] = sent(life)
    assert (to_worker, identity, command) == (True, W1, Command.B_JOB)
    assert unpack(body)["attempt"] == 1 and unpack(body)["timeout_ms"] == 10_000
    life.life.complete(worker, result(), b"\x01\x00" * 8, 1.5)
    [(_, identity, command, body)] = sent(life)
    assert (identity, command) == (C1, Command.RESULT)
    assert unpack(body)["num_samples"] == 8 and unpack(body)["worker_id"] == "worker-1"
    job = life.jobs.get("j1")
    assert job is not None and job.state is JobState.DONE and worker.free_slots == 1 and worker.jobs_done == 1
    assert hook.records == [("j1", JobState.QUEUED, 0, True), ("j1", JobState.RUNNING, 1, False),
                            ("j1", JobState.DONE, 1, False)]
    assert hook.completed_jobs == ["j1"]


def test_without_a_durable_hook_nothing_waits_for_a_commit() -> None:
    life = make()
    submit(life)
    assert [c for _, _, c, _, _ in life.outbox.now] == [Command.ACCEPTED] and life.outbox.later == []


def test_refusals_name_their_code() -> None:
    life = make(max_queue=1, max_text_chars=5)
    submit(life, "long", text="too long a text")
    submit(life, "a")
    submit(life, "b")
    life.start_drain(0.0)
    submit(life, "c")
    codes = [(unpack(b)["job_id"], unpack(b)["code"]) for _, _, c, b in sent(life) if c is Command.ERROR]
    assert codes == [("long", "bad_request"), ("b", "queue_full"), ("c", "shutting_down")]


def test_resubmission_attaches_and_a_finished_job_answers_again() -> None:
    life = make()
    worker = join(life)
    submit(life, identity=C1)
    submit(life, identity=C2)
    assert [unpack(b)["duplicate"] for _, _, c, b in sent(life) if c is Command.ACCEPTED] == [False, True]
    life.dispatch(0.0)
    life.life.complete(worker, result(), b"\x00\x00", 0.1)
    assert sorted(i for i, c in commands(life) if c is Command.RESULT) == [C1, C2]
    submit(life, identity=C2)
    assert commands(life) == [(C2, Command.RESULT)]


def test_retryable_worker_failure_requeues_at_the_front_until_max_attempts() -> None:
    life = make(max_attempts=2)
    worker = join(life)
    submit(life, "j1")
    submit(life, "j2")
    life.dispatch(0.0)
    failed(life, worker, Fail(job_id="j1", attempt=1, code="oom", retryable=True))
    life.dispatch(0.0)  # j1 again, ahead of j2
    assert [unpack(b)["job_id"] for w, _, c, b in sent(life) if c is Command.B_JOB] == ["j1", "j1"]
    failed(life, worker, Fail(job_id="j1", attempt=2, code="oom", retryable=True))
    [error] = [unpack(b) for _, _, c, b in sent(life) if c is Command.ERROR]
    assert error["code"] == "max_attempts" and "gave up after 2 attempts" in error["message"]


def test_non_retryable_failure_keeps_the_engine_code() -> None:
    life = make()
    worker = join(life)
    submit(life)
    life.dispatch(0.0)
    failed(life, worker, Fail(job_id="j1", attempt=1, code="unknown_speaker", message="no such voice"))
    [error] = [unpack(b) for _, _, c, b in sent(life) if c is Command.ERROR]
    assert (error["code"], error["retryable"]) == ("unknown_speaker", False)
    assert life.jobs.get("j1").state is JobState.FAILED  # type: ignore[union-attr]


def test_cancel_of_a_running_job_revokes_the_lease_and_a_late_answer_only_frees_the_slot() -> None:
    life = make()
    worker = join(life)
    submit(life)
    life.dispatch(0.0)
    sent(life)
    cancel(life, C2, "j1")
    out = commands(life)
    assert (W1, Command.B_CANCEL) in out and {i for i, c in out if c is Command.ERROR} == {C1, C2}
    assert worker.free_slots == 0  # the slot stays busy until the worker answers
    life.life.complete(worker, result(), b"\x00\x00", 0.2)
    assert sent(life) == [] and worker.free_slots == 1
    cancel(life, C1, "nope")
    assert [unpack(b)["code"] for _, _, c, b in sent(life)] == ["not_found"]


def test_a_dead_worker_s_job_goes_to_another_worker_with_the_next_attempt() -> None:
    life = make()
    join(life, W1, now=0.0)
    submit(life)
    life.dispatch(0.0)
    join(life, W2, now=2.5)
    life.workers.touch(life.workers.get(W2), 3.5)  # type: ignore[arg-type]
    life.expire(3.5)  # W1 silent for 3.5 s > 3 x 1 s
    assert life.workers.get(W1) is None
    life.dispatch(3.5)
    [(_, identity, _, body)] = [m for m in sent(life) if m[2] is Command.B_JOB][-1:]
    assert identity == W2 and unpack(body)["attempt"] == 2
    assert life.jobs.get("j1").workers_tried == ["worker-1", "worker-2"]  # type: ignore[union-attr]


def test_attempt_time_limit_cancels_and_requeues_deadline_fails() -> None:
    life = make()
    join(life, capacity=2)
    submit(life, "slow", timeout_ms=500)
    submit(life, "late", deadline_ms=2000)
    life.dispatch(0.0)
    sent(life)
    life.workers.touch(life.workers.get(W1), 0.6)  # type: ignore[arg-type]
    life.expire(0.6)
    out = sent(life)
    assert [unpack(b)["job_id"] for _, _, c, b in out if c is Command.B_CANCEL] == ["slow"]
    assert life.jobs.get("slow").state is JobState.QUEUED  # type: ignore[union-attr]
    life.workers.touch(life.workers.get(W1), 2.1)  # type: ignore[arg-type]
    life.expire(2.1)
    assert [unpack(b)["code"] for _, _, c, b in sent(life) if c is Command.ERROR] == ["deadline_exceeded"]


def test_retry_reopens_a_failed_job_with_fresh_tries_and_ignores_its_old_deadline() -> None:
    hook = Recorder()
    life = make(hook, max_attempts=1)
    worker = join(life)
    submit(life, deadline_ms=1000)
    life.dispatch(0.0)
    failed(life, worker, Fail(job_id="j1", attempt=1, code="boom", retryable=True))
    job = life.jobs.get("j1")
    assert job is not None and job.state is JobState.FAILED
    assert retry(life, job, now=0.9) is None
    # The attempt number goes on (leases stay unique, issue 9); the tries max_attempts counts start again.
    assert (job.state, job.attempt, job.tries, job.error, job.workers_tried) == (JobState.QUEUED, 1, 0, None, [])
    assert hook.records[-1] == ("j1", JobState.QUEUED, 1, True)
    life.expire(1.2)  # the first deadline (1.0) passed, the new one (1.9) has not
    assert job.state is JobState.QUEUED
    assert retry(life, job, now=1.2) == "job j1 is queued; only failed or cancelled jobs can be retried"


def test_a_resubmission_after_a_retryable_error_runs_the_job_again() -> None:
    life = make()
    submit(life)
    life.start_drain(0.0)
    assert life.drain_finished(100.0)
    assert [unpack(b)["code"] for _, _, c, b in sent(life) if c is Command.ERROR] == ["shutting_down"]
    life.life.draining = False
    submit(life, identity=C2)
    assert commands(life) == [(C2, Command.ACCEPTED)] and life.jobs.get("j1").state is JobState.QUEUED  # type: ignore[union-attr]


def test_cache_hook_answers_without_a_worker_and_records_the_job_as_new() -> None:
    hook = Recorder()
    hook.answers["cached line"] = CachedAudio("tone", "v1", 16000, 1, "s16le", b"\x00\x00" * 5)
    life = make(hook)
    submit(life, text="cached line")
    assert sent(life) == []  # set aside: the server reads the cache between turns, outside the transition
    read_cache(life)
    [(_, identity, command, body)] = sent(life)
    assert (identity, command) == (C1, Command.RESULT)
    assert unpack(body)["cached"] is True and unpack(body)["num_samples"] == 5
    assert hook.records == [("j1", JobState.DONE, 1, True)] and len(life.queue) == 0


def test_partial_reaches_subscribers_of_streamed_jobs_only() -> None:
    life = make()
    worker = join(life, capacity=2)
    submit(life, "s", stream=True)
    submit(life, "n")
    life.dispatch(0.0)
    sent(life)
    for job_id in ("s", "n"):
        life.life.partial(worker, Partial(job_id=job_id, attempt=1, seq=0, sample_rate=16000), b"\x00\x00", 0.0)
    assert [(i, c) for _, i, c, _ in sent(life)] == [(C1, Command.PARTIAL)]


def test_ready_again_resets_the_worker_and_requeues_its_jobs() -> None:
    life = make()
    join(life)
    submit(life)
    life.dispatch(0.0)
    join(life)
    assert life.jobs.get("j1").state is JobState.QUEUED  # type: ignore[union-attr]
    assert life.dirty


def test_unroutable_jobs_fail_with_no_workers_after_the_timeout() -> None:
    life = make(unroutable_timeout_s=1.0)
    submit(life, model="fish-speech")
    sent(life)
    life.expire(0.5)
    life.expire(1.4)
    assert sent(life) == []  # first seen at 0.5: not yet 1 s
    life.expire(1.6)
    [error] = [unpack(b) for _, _, c, b in sent(life) if c is Command.ERROR]
    assert error["code"] == ErrorCode.NO_WORKERS.value and error["retryable"] is True
