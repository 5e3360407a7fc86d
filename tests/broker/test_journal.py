"""The journal in-process, on both backends (a real SQLite file; a real PostgreSQL database of the session's
throwaway cluster): group commit, and what restore() gives back after a restart."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest

from tts_protocol.constants import JobState, Priority
from tts_protocol.messages import ErrorInfo, Submit

from tts_broker.jobs import Job
from tts_broker.journal import Journal

pytestmark = pytest.mark.timeout(30)


def make_job(job_id: str, *, priority: Priority = Priority.NORMAL, model: Optional[str] = None,
             accepted_at: float = 0.0, accepted_wall: float = 0.0, deadline_ms: int = 0,
             speaker: Optional[str] = None) -> Job:
    request = Submit(job_id=job_id, text=f"text of {job_id}", speaker=speaker, model=model, priority=priority,
                     deadline_ms=deadline_ms, voice={"length_scale": 1.2})
    return Job(request=request, priority=priority, model=model, accepted_at=accepted_at,
               accepted_wall=accepted_wall or time.time())


class Backend:
    """Opens journals of one backend and reads its rows as a second reader (only what was committed) would."""

    def __init__(self, kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.kind = kind
        self.path = tmp_path / "state" / "journal.sqlite3"  # the folder does not exist yet: Journal makes it
        self.url = request.getfixturevalue("pg_url") if kind == "postgres" else ""
        self._links: list[Any] = []

    def open(self) -> Any:
        if self.kind == "sqlite":
            return Journal(self.path)
        from tts_broker.journal_pg import PgJournal
        from tts_broker.leadership import LeaderLink

        for link in self._links:  # what a kill -9 of the last owner does: its session ends, its lock is free
            link.close()
        link = LeaderLink(self.url)
        link.connect()
        self._links.append(link)
        journal = PgJournal(link)
        assert link.try_lead()
        return journal

    def _sql(self, statement: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.kind == "sqlite":
            with sqlite3.connect(str(self.path)) as db:
                return db.execute(statement, args).fetchall()
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            cur = conn.execute(statement.replace("?", "%s").replace("FROM jobs", "FROM tts_jobs")
                               .replace("UPDATE jobs", "UPDATE tts_jobs"), args)
            return cur.fetchall() if cur.description else []

    def rows(self) -> list[tuple[str, str, int]]:
        """(job_id, state, attempt) of every committed row."""
        return [tuple(row) for row in self._sql("SELECT job_id, state, attempt FROM jobs ORDER BY job_id")]  # type: ignore[misc]

    def set_column(self, job_id: str, column: str, value: object) -> None:
        self._sql(f"UPDATE jobs SET {column}=? WHERE job_id=?", (value, job_id))

    def close(self) -> None:
        for link in self._links:
            link.close()


@pytest.fixture(params=[pytest.param("sqlite", marks=pytest.mark.unit), "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    backend = Backend(request.param, tmp_path, request)
    yield backend
    backend.close()


def test_record_is_buffered_and_flush_commits_the_group_once(store: Backend) -> None:
    journal = store.open()
    try:
        for job_id in ("a", "b", "c"):
            journal.record(make_job(job_id), new=True)
        assert store.rows() == []
        journal.flush()
        assert journal.commits == 1
        assert store.rows() == [("a", "queued", 0), ("b", "queued", 0), ("c", "queued", 0)]
        journal.flush()  # nothing noted: no transaction
        assert journal.commits == 1
    finally:
        journal.close()


def test_changes_are_updates_and_a_new_job_changed_before_flush_is_one_insert(store: Backend) -> None:
    journal = store.open()
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
        assert store.rows() == [("fresh", "running", 2), ("old", "running", 1)]
    finally:
        journal.close()


def test_close_flushes_what_is_pending(store: Backend) -> None:
    journal = store.open()
    journal.record(make_job("pending"), new=True)
    journal.close()
    assert store.rows() == [("pending", "queued", 0)]


def test_restore_requeues_unfinished_jobs_in_acceptance_order_with_attempts_kept(store: Backend) -> None:
    wall = time.time()
    journal = store.open()
    running = make_job("running", accepted_wall=wall - 5, model="piper:joe", priority=Priority.HIGH,
                       deadline_ms=60_000, speaker="joe")
    running.state, running.attempt, running.workers_tried = JobState.RUNNING, 2, ["w-1", "w-2"]
    queued = make_job("queued", accepted_wall=wall - 9)
    for job in (running, queued):
        journal.record(job, new=True)
    journal.flush()
    # No close(): what a kill -9 leaves behind is the committed file; a second broker opens it.
    second = store.open()
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


def test_restore_keeps_finished_jobs_younger_than_retain_s_with_their_answer(store: Backend) -> None:
    journal = store.open()
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
    store.set_column("expired", "finished_wall", time.time() - 3600)
    store.set_column("failed", "finished_wall", time.time() - 30)

    reopened = store.open()
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


def test_unreadable_rows_are_skipped_and_the_rest_restored(store: Backend) -> None:
    journal = store.open()
    for job_id in ("good-1", "bad-request", "bad-state", "bad-workers", "good-2"):
        journal.record(make_job(job_id), new=True)
    journal.close()
    store.set_column("bad-request", "request", b"\xc1 not msgpack")
    store.set_column("bad-state", "state", "exploded")
    store.set_column("bad-workers", "workers", "{not json")
    reopened = store.open()
    try:
        restored = reopened.restore(retain_s=60)
    finally:
        reopened.close()
    assert [job.job_id for job in restored.unfinished] == ["good-1", "good-2"]
    assert restored.finished == []


def test_a_reopened_job_is_written_whole_again_and_restores_as_unfinished(store: Backend) -> None:
    journal = store.open()
    job = make_job("retry-me")
    journal.record(job, new=True)
    job.state, job.attempt = JobState.FAILED, 1
    job.error = ErrorInfo(code="engine_error", message="no")
    journal.flush()
    job.state, job.attempt, job.error = JobState.QUEUED, 1, None  # RETRY
    journal.record(job, new=True)
    journal.close()
    reopened = store.open()
    try:
        restored = reopened.restore(retain_s=60)
    finally:
        reopened.close()
    assert [(j.job_id, j.state, j.attempt, j.error) for j in restored.unfinished] == [
        ("retry-me", JobState.QUEUED, 1, None)]


def test_forget_finished_before_deletes_only_old_finished_rows(store: Backend) -> None:
    journal = store.open()
    try:
        jobs = {job_id: make_job(job_id) for job_id in ("live", "recent", "old")}
        for job in jobs.values():
            journal.record(job, new=True)
        jobs["recent"].state = jobs["old"].state = JobState.DONE
        journal.record(jobs["recent"])
        journal.record(jobs["old"])
        journal.flush()
        store.set_column("old", "finished_wall", time.time() - 3600)
        assert journal.forget_finished_before(time.time() - 60) == 1
        assert [row[0] for row in store.rows()] == ["live", "recent"]
    finally:
        journal.close()
