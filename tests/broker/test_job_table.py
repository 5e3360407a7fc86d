"""JobTable in-process: live jobs, retention of finished ones (trimmed by age, count and bytes), reopen, recent."""

from __future__ import annotations

from typing import Optional

import pytest
import zmq

from tts_protocol.constants import JobState, Priority
from tts_protocol.messages import Submit

from tts_broker.jobs import Job, JobTable

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]

BIG = 1 << 40  # a limit that never bites
T0 = 1000.0  # monotonic clock values in these tests start here


def make_job(job_id: str, *, priority: Priority = Priority.NORMAL, model: Optional[str] = None,
             accepted_at: float = 0.0, state: JobState = JobState.QUEUED, audio_bytes: int = 0) -> Job:
    request = Submit(job_id=job_id, text=f"text of {job_id}", model=model, priority=priority)
    job = Job(request=request, priority=priority, model=model, accepted_at=accepted_at, state=state)
    if audio_bytes:
        job.audio = b"\x01" * audio_bytes
    return job


def finish(table: JobTable, job_id: str, now: float, *, state: JobState = JobState.DONE,
           audio_bytes: int = 0) -> Job:
    job = make_job(job_id, accepted_at=now, audio_bytes=audio_bytes)
    table.add(job)
    job.state = state
    table.finish(job, now)
    return job


def retained_ids(table: JobTable, candidates: list[str]) -> list[str]:
    return [job_id for job_id in candidates if table.get(job_id) is not None]


def test_finish_moves_a_job_from_live_to_retention() -> None:
    table = JobTable(ttl_s=60, max_jobs=100, max_bytes=BIG)
    job = make_job("a", audio_bytes=10)
    table.add(job)
    job.subscribers.add(b"client-1")
    assert table.get("a") is job and table.live_count == 1 and table.retained_count == 0
    job.state = JobState.DONE
    table.finish(job, 5.0)
    assert table.get("a") is job
    assert (table.live_count, table.retained_count, table.retained_bytes) == (0, 1, 10)
    assert job.finished_at == 5.0 and job.subscribers == set()
    assert list(table.live()) == []


def test_counters_count_done_and_every_other_final_state_as_failed() -> None:
    table = JobTable(ttl_s=60, max_jobs=100, max_bytes=BIG)
    finish(table, "ok-1", 1.0)
    finish(table, "ok-2", 1.0)
    finish(table, "bad", 1.0, state=JobState.FAILED)
    finish(table, "stopped", 1.0, state=JobState.CANCELLED)
    assert (table.done_total, table.failed_total) == (2, 2)


def test_trimming_by_ttl_oldest_first() -> None:
    table = JobTable(ttl_s=10, max_jobs=100, max_bytes=BIG)
    finish(table, "a", T0, audio_bytes=3)
    finish(table, "b", T0 + 5.0, audio_bytes=4)
    table.expire(T0 + 10.0)  # exactly ttl old: still kept
    assert retained_ids(table, ["a", "b"]) == ["a", "b"]
    table.expire(T0 + 10.01)
    assert retained_ids(table, ["a", "b"]) == ["b"]
    assert (table.retained_count, table.retained_bytes) == (1, 4)
    table.expire(T0 + 15.01)
    assert (table.retained_count, table.retained_bytes) == (0, 0)


def test_finishing_a_job_also_trims_expired_ones() -> None:
    table = JobTable(ttl_s=10, max_jobs=100, max_bytes=BIG)
    finish(table, "old", T0)
    finish(table, "new", T0 + 20.0)
    assert retained_ids(table, ["old", "new"]) == ["new"]


def test_trimming_by_count_keeps_the_newest() -> None:
    table = JobTable(ttl_s=600, max_jobs=3, max_bytes=BIG)
    ids = [f"j{i}" for i in range(5)]
    for i, job_id in enumerate(ids):
        finish(table, job_id, float(i), audio_bytes=i + 1)
    assert retained_ids(table, ids) == ["j2", "j3", "j4"]
    assert (table.retained_count, table.retained_bytes) == (3, 3 + 4 + 5)
    assert (table.done_total, table.failed_total) == (5, 0)  # counters are not trimmed


def test_trimming_by_bytes_drops_the_oldest_until_under_the_limit() -> None:
    table = JobTable(ttl_s=600, max_jobs=100, max_bytes=100)
    finish(table, "a", 1.0, audio_bytes=40)
    finish(table, "b", 2.0, audio_bytes=40)
    assert table.retained_bytes == 80
    finish(table, "c", 3.0, audio_bytes=40)
    assert retained_ids(table, ["a", "b", "c"]) == ["b", "c"]
    assert table.retained_bytes == 80
    finish(table, "d", 4.0, audio_bytes=20)  # exactly at the limit: nothing goes
    assert retained_ids(table, ["b", "c", "d"]) == ["b", "c", "d"]
    assert table.retained_bytes == 100


def test_a_result_larger_than_max_bytes_is_not_retained() -> None:
    table = JobTable(ttl_s=600, max_jobs=100, max_bytes=100)
    finish(table, "small", 1.0, audio_bytes=30)
    finish(table, "huge", 2.0, audio_bytes=101)
    # Oldest first until under the limit: the small one goes, then the huge one itself.
    assert retained_ids(table, ["small", "huge"]) == []
    assert (table.retained_count, table.retained_bytes) == (0, 0)
    assert table.done_total == 2


@pytest.mark.parametrize(("ttl_s", "max_jobs"), [(0, 100), (60, 0)])
def test_retention_off_keeps_nothing_but_counts(ttl_s: float, max_jobs: int) -> None:
    table = JobTable(ttl_s=ttl_s, max_jobs=max_jobs, max_bytes=BIG)
    finish(table, "a", 1.0, audio_bytes=5)
    finish(table, "b", 1.0, state=JobState.FAILED)
    assert table.get("a") is None and table.get("b") is None
    assert (table.retained_count, table.retained_bytes, table.live_count) == (0, 0, 0)
    assert (table.done_total, table.failed_total) == (1, 1)


def test_reopen_takes_a_job_out_of_retention_and_it_counts_again_when_finished() -> None:
    table = JobTable(ttl_s=600, max_jobs=100, max_bytes=BIG)
    job = finish(table, "retry-me", 1.0, state=JobState.FAILED, audio_bytes=7)
    finish(table, "other", 1.0, audio_bytes=5)
    assert (table.retained_count, table.retained_bytes) == (2, 12)
    table.reopen(job)
    assert (table.retained_count, table.retained_bytes, table.live_count) == (1, 5, 1)
    assert table.get("retry-me") is job and [j.job_id for j in table.live()] == ["retry-me"]
    job.state = JobState.DONE
    table.finish(job, 2.0)
    assert (table.done_total, table.failed_total) == (2, 1)
    assert (table.retained_count, table.retained_bytes, table.live_count) == (2, 12, 0)


def test_reopen_of_a_job_no_longer_retained_only_makes_it_live() -> None:
    table = JobTable(ttl_s=600, max_jobs=1, max_bytes=BIG)
    first = finish(table, "first", 1.0, audio_bytes=3)
    finish(table, "second", 2.0, audio_bytes=4)  # trims "first"
    table.reopen(first)
    assert (table.retained_count, table.retained_bytes, table.live_count) == (1, 4, 1)


def test_retain_keeps_a_restored_job_without_touching_counters_or_trimming() -> None:
    table = JobTable(ttl_s=10, max_jobs=1, max_bytes=BIG)
    for job_id, finished_at in [("r1", T0), ("r2", T0 + 1.0)]:
        job = make_job(job_id, state=JobState.DONE, audio_bytes=2)
        job.finished_at = finished_at
        table.retain(job)
    assert (table.retained_count, table.retained_bytes) == (2, 4)
    assert (table.done_total, table.failed_total) == (0, 0)
    table.expire(T0 + 5.0)  # the next trim applies the count limit
    assert retained_ids(table, ["r1", "r2"]) == ["r2"]


def test_recent_is_newest_first_over_live_and_retained_with_a_state_filter() -> None:
    table = JobTable(ttl_s=600, max_jobs=100, max_bytes=BIG)
    states = {"q1": JobState.QUEUED, "d2": JobState.DONE, "f3": JobState.FAILED, "r4": JobState.RUNNING,
              "f5": JobState.FAILED, "c6": JobState.CANCELLED}
    for i, (job_id, state) in enumerate(states.items(), start=1):
        job = make_job(job_id, accepted_at=float(i))
        table.add(job)
        job.state = state
        if state.finished:
            table.finish(job, 10.0)
    assert (table.live_count, table.retained_count) == (2, 4)
    assert [j.job_id for j in table.recent(None, 100)] == ["c6", "f5", "r4", "f3", "d2", "q1"]
    assert [j.job_id for j in table.recent(None, 3)] == ["c6", "f5", "r4"]
    assert [j.job_id for j in table.recent(JobState.FAILED, 100)] == ["f5", "f3"]
    assert [j.job_id for j in table.recent(JobState.FAILED, 1)] == ["f5"]
    assert [j.job_id for j in table.recent(JobState.QUEUED, 100)] == ["q1"]
    assert table.recent(JobState.DONE, 0) == []


def test_live_is_a_snapshot_safe_to_finish_from() -> None:
    table = JobTable(ttl_s=600, max_jobs=100, max_bytes=BIG)
    for job_id in ("a", "b", "c"):
        table.add(make_job(job_id))
    for job in table.live():
        job.state = JobState.CANCELLED
        table.finish(job, 1.0)
    assert (table.live_count, table.retained_count, table.failed_total) == (0, 3, 3)


def test_audio_held_as_a_zmq_frame_is_sized_and_read_without_copy_errors() -> None:
    table = JobTable(ttl_s=600, max_jobs=100, max_bytes=BIG)
    job = make_job("framed")
    job.audio = zmq.Frame(b"\x02" * 33)
    table.add(job)
    job.state = JobState.DONE
    table.finish(job, 1.0)
    assert job.audio_bytes == 33 and table.retained_bytes == 33
    assert job.audio_data() == b"\x02" * 33
    assert make_job("silent").audio_data() == b"" and make_job("silent").audio_bytes == 0
