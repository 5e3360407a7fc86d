"""Journal in-process on real SQLite files: group commit, and what restore() gives back after a restart."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Optional

import pytest

from tts_protocol.constants import JobState, Priority
from tts_protocol.messages import ErrorInfo, Submit

from tts_broker.jobs import Job
from tts_broker.journal import Journal

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]


def make_job(job_id: str, *, priority: Priority = Priority.NORMAL, model: Optional[str] = None,
             accepted_at: float = 0.0, accepted_wall: float = 0.0, deadline_ms: int = 0,
             speaker: Optional[str] = None) -> Job:
    request = Submit(job_id=job_id, text=f"text of {job_id}", speaker=speaker, model=model, priority=priority,
                     deadline_ms=deadline_ms, voice={"length_scale": 1.2})
    return Job(request=request, priority=priority, model=model, accepted_at=accepted_at,
               accepted_wall=accepted_wall or time.time())


def rows(path: Path) -> list[tuple[str, str, int]]:
    """(job_id, state, attempt) as a second reader sees the file: only what was committed."""
    with sqlite3.connect(str(path)) as db:
        return db.execute("SELECT job_id, state, attempt FROM jobs ORDER BY job_id").fetchall()


def set_column(path: Path, job_id: str, column: str, value: object) -> None:
    with sqlite3.connect(str(path)) as db:
        db.execute(f"UPDATE jobs SET {column}=? WHERE job_id=?", (value, job_id))


@pytest.fixture
def journal_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "journal.sqlite3"  # the folder does not exist yet: Journal makes it


def test_record_is_buffered_and_flush_commits_the_group_once(journal_path: Path) -> None:
    journal = Journal(journal_path)
    try:
        for job_id in ("a", "b", "c"):
            journal.record(make_job(job_id), new=True)
        assert rows(journal_path) == []
        journal.flush()
        assert journal.commits == 1
        assert rows(journal_path) == [("a", "queued", 0), ("b", "queued", 0), ("c", "queued", 0)]
        journal.flush()  # nothing noted: no transaction
        assert journal.commits == 1
    finally:
        journal.close()


def test_changes_are_updates_and_a_new_job_changed_before_flush_is_one_insert(journal_path: Path) -> None:
    journal = Journal(journal_path)
    try:
        old = make_job("old")
        journal.record(old, new=True)
        journal.flush()
        old.state, old.attempt = JobState.RUNNING, 1
        journal.record(old)
        fresh = make_job("fresh")
        journal.record(fresh, new=True)
        fresh.state, fresh.attempt = JobState.RUNNING, 2
        journal.record(fresh)  # still the whole row of a new job
        journal.flush()
        assert journal.commits == 2
        assert rows(journal_path) == [("fresh", "running", 2), ("old", "running", 1)]
    finally:
        journal.close()


def test_close_flushes_what_is_pending(journal_path: Path) -> None:
    journal = Journal(journal_path)
    journal.record(make_job("pending"), new=True)
    journal.close()
    assert rows(journal_path) == [("pending", "queued", 0)]


def test_restore_requeues_unfinished_jobs_in_acceptance_order_with_attempts_kept(journal_path: Path) -> None:
    wall = time.time()
    journal = Journal(journal_path)
    running = make_job("running", accepted_wall=wall - 5, model="piper:joe", priority=Priority.HIGH,
                       deadline_ms=60_000, speaker="joe")
    running.state, running.attempt, running.workers_tried = JobState.RUNNING, 2, ["w-1", "w-2"]
    queued = make_job("queued", accepted_wall=wall - 9)
    for job in (running, queued):
        journal.record(job, new=True)
    journal.flush()
    # No close(): what a kill -9 leaves behind is the committed file; a second broker opens it.
    second = Journal(journal_path)
    try:
        restored = second.restore(retain_s=60)
    finally:
        second.close()
        journal.close()
    assert restored.finished == []
    assert [job.job_id for job in restored.unfinished] == ["queued", "running"]
    back = restored.unfinished[1]
    assert back.state is JobState.QUEUED and back.attempt == 2 and back.workers_tried == ["w-1", "w-2"]
    assert back.request == running.request and back.priority is Priority.HIGH and back.model == "piper:joe"
    assert back.accepted_wall == running.accepted_wall
    now = time.monotonic()
    assert now - back.accepted_at == pytest.approx(5.0, abs=1.0)
    assert back.deadline is not None and back.deadline - back.accepted_at == pytest.approx(60.0, abs=0.01)
    assert restored.unfinished[0].deadline is None


def test_restore_keeps_finished_jobs_younger_than_retain_s_with_their_answer(journal_path: Path) -> None:
    journal = Journal(journal_path)
    done = make_job("done")
    failed = make_job("failed")
    expired = make_job("expired")
    for job in (done, failed, expired):
        journal.record(job, new=True)
    journal.flush()
    done.state, done.attempt, done.result, done.audio, done.cached = JobState.DONE, 1, b"packed", b"\x01\x02" * 8, True
    done.workers_tried = ["w-9"]
    failed.state, failed.attempt = JobState.FAILED, 3
    failed.error = ErrorInfo(code="max_attempts", message="gave up after 3 attempts", retryable=False)
    expired.state, expired.attempt = JobState.DONE, 1
    for job in (done, failed, expired):
        journal.record(job)
    journal.close()
    set_column(journal_path, "expired", "finished_wall", time.time() - 3600)
    set_column(journal_path, "failed", "finished_wall", time.time() - 30)

    reopened = Journal(journal_path)
    try:
        restored = reopened.restore(retain_s=60)
    finally:
        reopened.close()
    assert restored.unfinished == []
    by_id = {job.job_id: job for job in restored.finished}
    assert sorted(by_id) == ["done", "failed"]
    back = by_id["done"]
    assert back.state is JobState.DONE and back.result == b"packed" and back.audio_data() == b"\x01\x02" * 8
    assert back.audio_bytes == 16 and back.cached is True and back.workers_tried == ["w-9"] and back.error is None
    assert back.finished_at is not None and time.monotonic() - back.finished_at == pytest.approx(0.0, abs=1.0)
    assert by_id["failed"].error == failed.error and by_id["failed"].attempt == 3
    assert time.monotonic() - (by_id["failed"].finished_at or 0.0) == pytest.approx(30.0, abs=1.0)


def test_unreadable_rows_are_skipped_and_the_rest_restored(journal_path: Path) -> None:
    journal = Journal(journal_path)
    for job_id in ("good-1", "bad-request", "bad-state", "bad-workers", "good-2"):
        journal.record(make_job(job_id), new=True)
    journal.close()
    set_column(journal_path, "bad-request", "request", b"\xc1 not msgpack")
    set_column(journal_path, "bad-state", "state", "exploded")
    set_column(journal_path, "bad-workers", "workers", "{not json")
    reopened = Journal(journal_path)
    try:
        restored = reopened.restore(retain_s=60)
    finally:
        reopened.close()
    assert [job.job_id for job in restored.unfinished] == ["good-1", "good-2"]
    assert restored.finished == []


def test_a_reopened_job_is_written_whole_again_and_restores_as_unfinished(journal_path: Path) -> None:
    journal = Journal(journal_path)
    job = make_job("retry-me")
    journal.record(job, new=True)
    job.state, job.attempt = JobState.FAILED, 1
    job.error = ErrorInfo(code="engine_error", message="no")
    journal.flush()
    job.state, job.attempt, job.error = JobState.QUEUED, 1, None  # RETRY
    journal.record(job, new=True)
    journal.close()
    reopened = Journal(journal_path)
    try:
        restored = reopened.restore(retain_s=60)
    finally:
        reopened.close()
    assert [(j.job_id, j.state, j.attempt, j.error) for j in restored.unfinished] == [
        ("retry-me", JobState.QUEUED, 1, None)]


def test_forget_finished_before_deletes_only_old_finished_rows(journal_path: Path) -> None:
    journal = Journal(journal_path)
    try:
        jobs = {job_id: make_job(job_id) for job_id in ("live", "recent", "old")}
        for job in jobs.values():
            journal.record(job, new=True)
        jobs["recent"].state = jobs["old"].state = JobState.DONE
        journal.record(jobs["recent"])
        journal.record(jobs["old"])
        journal.flush()
        set_column(journal_path, "old", "finished_wall", time.time() - 3600)
        assert journal.forget_finished_before(time.time() - 60) == 1
        assert [row[0] for row in rows(journal_path)] == ["live", "recent"]
    finally:
        journal.close()
