"""Issue 9 in-process: fairness between clients, idempotency bound to content, leases unique for ever, limits.

Driven like test_lifecycle.py: the core (BrokerCore) with explicit times, its outbox read back. No sockets.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path
from typing import Any, Optional

import msgpack
import pytest
from pydantic import ValidationError

from tts_protocol import Command
from tts_protocol.constants import JobState, Priority
from tts_protocol.messages import MAX_DURATION_MS, Fail, Ready, Submit, WorkerResult

from tts_broker.core import BrokerCore
from tts_broker.hooks import JournalHook
from tts_broker.jobs import Job
from tts_broker.settings import BrokerSettings
from tts_broker.workers import WorkerRecord

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

C1, C2, C3, W1 = b"client-1", b"client-2", b"client-3", b"worker-1"


def settings(**over: Any) -> BrokerSettings:
    base: dict[str, Any] = {"max_attempts": 3, "max_queue": 100, "max_text_chars": 100, "job_timeout_s": 10.0,
                            "heartbeat_interval_s": 1.0, "heartbeat_liveness": 3, "result_ttl_s": 60.0}
    return BrokerSettings(_env_file=None, **{**base, **over})  # type: ignore[call-arg]


def make(**over: Any) -> BrokerCore:
    return BrokerCore(settings(**over), [])


def join(life: BrokerCore, identity: bytes = W1, capacity: int = 1) -> WorkerRecord:
    life.life.worker_ready(identity, Ready(worker_id=identity.decode(), engine="tone", model="v1", capacity=capacity),
                      0.0)
    worker = life.workers.get(identity)
    assert worker is not None
    return worker


def sent(life: BrokerCore) -> list[tuple[bool, bytes, Command, Any]]:
    out = [(w, i, c, b) for w, i, c, b, _ in life.outbox.now + life.outbox.later]
    life.outbox.now.clear()
    life.outbox.later.clear()
    return out


def unpack(body: Any) -> dict[str, Any]:
    return msgpack.unpackb(body, raw=False) if isinstance(body, bytes) else body.to_wire()


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


def dispatched(life: BrokerCore) -> list[tuple[str, int]]:
    """(job_id, attempt) of the JOBs in the outbox, in order; the outbox is cleared."""
    return [(unpack(b)["job_id"], unpack(b)["attempt"]) for _, _, c, b in sent(life) if c is Command.B_JOB]


def errors(life: BrokerCore) -> list[dict[str, Any]]:
    return [unpack(b) for _, _, c, b in sent(life) if c is Command.ERROR]


def run_one(life: BrokerCore, worker: Any, now: float = 0.0) -> str:
    """Dispatch to a capacity-1 worker and complete what it got; the job id."""
    life.dispatch(now)
    [(job_id, attempt)] = dispatched(life)
    life.life.complete(worker, result(job_id, attempt), b"\x00\x00", now)
    sent(life)
    return job_id


# ---- fairness ----------------------------------------------------------------------------------------


def test_a_flooding_client_does_not_starve_another_one() -> None:
    life = make(max_queue=20_000, max_client_queued=0)
    worker = join(life)
    for i in range(10_000):
        submit(life, f"flood-{i}", identity=C1)
    for i in range(3):
        submit(life, f"normal-{i}", identity=C2)
    sent(life)
    order = [run_one(life, worker) for _ in range(6)]
    assert order == ["flood-0", "normal-0", "flood-1", "normal-1", "flood-2", "normal-2"]
    assert len(life.queue) == 10_000 - 3


def test_round_robin_spans_routing_keys_a_worker_serves() -> None:
    life = make(max_client_queued=0)
    worker = join(life)  # serves None, "tone" and "tone:v1"
    for i in range(5):
        submit(life, f"a-{i}", identity=C1, model="tone")
    for i in range(2):
        submit(life, f"b-{i}", identity=C2)
        submit(life, f"c-{i}", identity=C3, model="tone:v1")
    sent(life)
    order = [run_one(life, worker) for _ in range(9)]
    assert order == ["a-0", "b-0", "c-0", "a-1", "b-1", "c-1", "a-2", "a-3", "a-4"]


def test_a_new_client_is_served_before_one_that_just_had_a_turn() -> None:
    life = make(max_client_queued=0)
    worker = join(life)
    for i in range(4):
        submit(life, f"a-{i}", identity=C1)
    sent(life)
    assert [run_one(life, worker) for _ in range(2)] == ["a-0", "a-1"]
    submit(life, "late", identity=C2)
    assert run_one(life, worker) == "late"


def test_priority_levels_still_come_first_and_requeued_jobs_go_first_in_their_level() -> None:
    life = make(max_client_queued=0)
    worker = join(life)
    submit(life, "a-normal", identity=C1)
    submit(life, "b-normal", identity=C2)
    submit(life, "a-high", identity=C1, priority="high")
    life.dispatch(0.0)
    assert dispatched(life) == [("a-high", 1)]
    failed(life, worker, Fail(job_id="a-high", attempt=1, code="oom", retryable=True))
    life.dispatch(0.0)
    assert dispatched(life) == [("a-high", 2)]


def test_per_client_queued_cap_answers_too_many_jobs_retryable_and_spares_other_clients() -> None:
    life = make(max_client_queued=2)
    submit(life, "a-1", identity=C1)
    submit(life, "a-2", identity=C1)
    submit(life, "a-3", identity=C1)
    submit(life, "b-1", identity=C2)
    [error] = errors(life)
    assert (error["job_id"], error["code"], error["retryable"]) == ("a-3", "too_many_jobs", True)
    assert "max_client_queued" in error["message"]
    assert life.jobs.get("b-1") is not None


def test_per_client_running_cap_leaves_slots_to_other_clients() -> None:
    life = make(max_client_running=1, max_client_queued=0)
    worker = join(life, capacity=3)
    for i in range(3):
        submit(life, f"a-{i}", identity=C1)
    life.dispatch(0.0)
    assert dispatched(life) == [("a-0", 1)]  # C1 is at its cap; two slots stay free
    submit(life, "b-0", identity=C2)
    life.dispatch(0.0)
    assert dispatched(life) == [("b-0", 1)]
    life.life.complete(worker, result("a-0"), b"\x00\x00", 0.1)
    life.dispatch(0.1)
    assert dispatched(life) == [("a-1", 1)]
    assert life.leases.in_flight == {C1: 1, C2: 1}


def test_high_priority_can_be_restricted_with_an_admin_hook() -> None:
    life = make(allow_high_priority="none")
    submit(life, "h", priority="high")
    assert life.jobs.get("h").priority is Priority.NORMAL  # type: ignore[union-attr]
    life = make(allow_high_priority="admin")
    submit(life, "h1", identity=C1, priority="high", admin=False)
    submit(life, "h2", identity=C2, priority="high", admin=True)  # the sender holds an admin key
    assert life.jobs.get("h1").priority is Priority.NORMAL  # type: ignore[union-attr]
    assert life.jobs.get("h2").priority is Priority.HIGH  # type: ignore[union-attr]
    assert make().settings.allow_high_priority == "all"


# ---- idempotency bound to content --------------------------------------------------------------------


def test_same_id_with_another_text_is_a_conflict_and_the_same_request_still_attaches() -> None:
    life = make()
    worker = join(life)
    submit(life, "j1", identity=C1, text="hello")
    submit(life, "j1", identity=C2, text="goodbye")
    submit(life, "j1", identity=C2, text="hello", priority="low", timeout_ms=5_000)  # delivery options may differ
    out = sent(life)
    [error] = [unpack(b) for _, _, c, b in out if c is Command.ERROR]
    assert (error["job_id"], error["code"], error["retryable"]) == ("j1", "conflict", False)
    assert [unpack(b)["duplicate"] for _, _, c, b in out if c is Command.ACCEPTED] == [False, True]
    life.dispatch(0.0)
    life.life.complete(worker, result(), b"\x00\x00", 0.1)
    sent(life)
    for fields in ({"text": "goodbye"}, {"text": "hello", "speaker": "amy"}, {"text": "hello", "model": "tone"},
                   {"text": "hello", "voice": {"seed": 2}}):
        submit(life, "j1", identity=C2, **fields)
        assert [e["code"] for e in errors(life)] == ["conflict"], fields
    submit(life, "j1", identity=C2, text="hello")
    assert [c for _, _, c, _ in sent(life)] == [Command.RESULT]


def test_conflict_holds_across_a_journal_restore(tmp_path: Path) -> None:
    hook = JournalHook(tmp_path / "journal.sqlite3", synchronous="normal", result_ttl_s=60.0)
    life = BrokerCore(settings(), [hook])
    submit(life, "kept", text="first text", voice={"seed": 1})
    hook.commit()
    hook.close()
    hook = JournalHook(tmp_path / "journal.sqlite3", synchronous="normal", result_ttl_s=60.0)
    life = BrokerCore(settings(), [hook])
    life.restore()
    submit(life, "kept", identity=C2, text="other text")
    assert [e["code"] for e in errors(life)] == ["conflict"]
    submit(life, "kept", identity=C2, text="first text", voice={"seed": 1})
    assert [c for _, _, c, _ in sent(life)] == [Command.ACCEPTED]
    hook.close()


# ---- leases unique for ever --------------------------------------------------------------------------


def test_retry_after_cancel_is_not_cancelled_by_the_old_attempt_s_late_answer() -> None:
    life = make()
    worker = join(life, capacity=2)
    submit(life)
    life.dispatch(0.0)
    assert dispatched(life) == [("j1", 1)]
    cancel(life, C1, "j1")
    sent(life)
    job = life.jobs.get("j1")
    assert job is not None and retry(life, job, 0.1) is None
    life.dispatch(0.1)
    assert dispatched(life) == [("j1", 2)]  # same worker (its other slot), a new lease
    submit(life, identity=C1, now=0.1)  # the client attaches again to hear the outcome
    assert [(i, c) for _, i, c, _ in sent(life)] == [(C1, Command.ACCEPTED)]
    failed(life, worker, Fail(job_id="j1", attempt=1, code="cancelled", message="stopped late"))
    assert sent(life) == [] and job.state is JobState.RUNNING and worker.free_slots == 1
    life.life.complete(worker, result("j1", 2), b"\x00\x00", 0.2)
    assert [(i, c) for _, i, c, _ in sent(life)] == [(C1, Command.RESULT)] and job.state is JobState.DONE


def test_max_attempts_counts_tries_since_the_last_reopen() -> None:
    life = make(max_attempts=2)
    worker = join(life)
    submit(life)
    for attempt in (1, 2):
        life.dispatch(0.0)
        failed(life, worker, Fail(job_id="j1", attempt=attempt, code="oom", retryable=True))
    assert [e["code"] for e in errors(life)] == ["max_attempts"]
    job = life.jobs.get("j1")
    assert job is not None and retry(life, job, 1.0) is None
    seen = []
    for attempt in (3, 4):
        life.dispatch(1.0)
        seen += dispatched(life)
        failed(life, worker, Fail(job_id="j1", attempt=attempt, code="oom", retryable=True))
    assert seen == [("j1", 3), ("j1", 4)]  # two more tries after the reopen, with new attempt numbers
    assert job.state is JobState.FAILED and job.error is not None
    assert job.error.code == "max_attempts" and "after 2 attempts" in job.error.message


@pytest.mark.parametrize("code", ["internal", "shutting_down", "no_workers", "queue_full", "engine_error"])
def test_a_non_retryable_worker_failure_is_final_whatever_its_code(code: str) -> None:
    life = make()
    worker = join(life)
    submit(life)
    life.dispatch(0.0)
    failed(life, worker, Fail(job_id="j1", attempt=1, code=code, retryable=False))
    [error] = errors(life)
    assert (error["code"], error["retryable"]) == (code, False)
    submit(life, identity=C2)  # a resubmission gets the same final answer, it does not run the job again
    assert [e["code"] for e in errors(life)] == [code]
    life.dispatch(0.0)
    assert dispatched(life) == []


# ---- limits ------------------------------------------------------------------------------------------


def test_a_worker_claiming_more_capacity_than_allowed_is_clamped() -> None:
    life = make(max_worker_capacity=4)
    worker = join(life, capacity=1024)
    assert worker.ready.capacity == 4 and worker.free_slots == 4
    for i in range(10):
        submit(life, f"j{i}")
    life.dispatch(0.0)
    assert len(dispatched(life)) == 4


def test_a_result_over_max_result_bytes_fails_the_job_with_too_large() -> None:
    life = make(max_result_bytes=1024, max_attempts=3)
    worker = join(life)
    submit(life)
    life.dispatch(0.0)
    life.life.complete(worker, result(), b"\x00" * 2048, 0.1)
    [error] = errors(life)
    assert (error["code"], error["retryable"]) == ("too_large", False) and "max_result_bytes" in error["message"]
    assert worker.free_slots == 1 and worker.jobs_failed == 1 and life.jobs.get("j1").audio is None  # type: ignore[union-attr]
    life.dispatch(0.1)
    assert dispatched(life) == []


def test_the_largest_timeout_is_seven_days_and_anything_above_is_refused() -> None:
    with pytest.raises(ValidationError):
        Submit(job_id="j", text="x", timeout_ms=2**64 - 1)
    with pytest.raises(ValidationError):
        Submit(job_id="j", text="x", deadline_ms=MAX_DURATION_MS + 1)
    life = make()
    join(life)
    submit(life, timeout_ms=MAX_DURATION_MS, deadline_ms=MAX_DURATION_MS)
    life.dispatch(0.0)
    [(_, _, _, body)] = [m for m in sent(life) if m[2] is Command.B_JOB]
    assert unpack(body)["timeout_ms"] == MAX_DURATION_MS


def test_a_journal_row_past_today_s_limits_is_skipped_with_one_warning(tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "journal.sqlite3"
    hook = JournalHook(path, synchronous="normal", result_ttl_s=60.0)
    life = BrokerCore(settings(), [hook])
    submit(life, "good")
    hook.commit()
    hook.close()
    db = sqlite3.connect(str(path))
    for i in range(3):  # what an older broker accepted and journaled: the job that killed it on every start
        request = msgpack.packb({"job_id": f"bad-{i}", "text": "x", "timeout_ms": 2**64 - 1}, use_bin_type=True)
        db.execute("INSERT INTO jobs (job_id, request, model, state, attempt, accepted_wall, workers)"
                   " VALUES (?, ?, NULL, 'queued', 0, ?, '[]')", (f"bad-{i}", request, time.time()))
    db.commit()
    db.close()
    hook = JournalHook(path, synchronous="normal", result_ttl_s=60.0)
    life = BrokerCore(settings(), [hook])
    with caplog.at_level(logging.WARNING, logger="tts_broker.journal"):
        life.restore()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "3 unreadable or out-of-range rows skipped" in warnings[0]
    assert [job.job_id for job in life.jobs.live()] == ["good"]
    worker = join(life)
    life.dispatch(0.0)
    [(job_id, attempt)] = dispatched(life)
    life.life.complete(worker, result(job_id, attempt), b"\x00\x00", 0.1)
    assert life.jobs.get("good").state is JobState.DONE  # type: ignore[union-attr]
    hook.close()
