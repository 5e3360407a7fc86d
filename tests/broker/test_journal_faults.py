"""Journal faults in-process on real SQLite files: a locked database, lost content, a foreign schema."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest

from tts_protocol.constants import JobState
from tts_protocol.messages import Submit

from tts_broker.hooks import JournalHook
from tts_broker.jobs import Job
from tts_broker.journal import Journal, JournalUnavailable
from tts_broker.statedir import JournalCorrupt, JournalLost, StateDirLocked, StateLock

pytestmark = [pytest.mark.unit, pytest.mark.timeout(20)]


def job(job_id: str) -> Job:
    request = Submit(job_id=job_id, text=f"text of {job_id}")
    return Job(request=request, priority=request.priority, model=None, accepted_at=time.monotonic(),
               accepted_wall=time.time())


def committed_ids(path: Path) -> list[str]:
    with sqlite3.connect(str(path)) as db:
        return [row[0] for row in db.execute("SELECT job_id FROM jobs ORDER BY job_id")]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "journal.sqlite3"


def test_a_locked_database_fails_the_commit_keeps_the_rows_and_recovers(path: Path) -> None:
    hook = JournalHook(path, synchronous="normal", result_ttl_s=60)
    other = sqlite3.connect(str(path), isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")  # a backup tool, say, holding the write lock
        hook.recorded(job("a"), new=True)
        with pytest.raises(JournalUnavailable, match="locked"):
            hook.commit()
        assert hook.fault is not None and "locked" in hook.fault
        status = hook.status()
        assert status["journal_fault"] == hook.fault and status["journal_faults"] == 1
        assert status["journal_pending"] == 1
        hook.recorded(job("b"), new=True)
        with pytest.raises(JournalUnavailable):
            hook.commit()
        assert hook.status()["journal_faults"] == 1  # one fault episode, however many retries
        other.execute("ROLLBACK")
        hook.commit()
        assert hook.fault is None and hook.status()["journal_pending"] == 0
        assert committed_ids(path) == ["a", "b"]
    finally:
        other.close()
        hook.close()


def test_a_failing_rollback_does_not_hide_the_cause(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    journal = Journal(path)
    try:
        journal.record(job("a"), new=True)

        real = journal._db
        calls: list[str] = []

        class Proxy:
            in_transaction = True

            def execute(self, sql: str, *args: object) -> object:
                calls.append(sql)
                if sql.startswith("INSERT"):
                    raise sqlite3.OperationalError("database or disk is full")
                if sql == "ROLLBACK":
                    raise sqlite3.OperationalError("cannot rollback - no transaction is active")
                return real.execute(sql, *args)

            def executemany(self, sql: str, rows: object) -> object:
                return self.execute(sql)

        journal._db = Proxy()  # type: ignore[assignment]
        with pytest.raises(JournalUnavailable, match="disk is full"):
            journal.flush()
        assert "ROLLBACK" in calls
        assert "ROLLBACK failed too" in caplog.text and "disk is full" in caplog.text
        journal._db = real
        real.execute("ROLLBACK")
        journal.flush()  # the rows were kept
        assert committed_ids(path) == ["a"]
    finally:
        journal.close()


def _journal_with_commits(path: Path, n: int) -> None:
    journal = Journal(path)
    for i in range(n):
        journal.record(job(f"j{i}"), new=True)
        journal.flush()
    journal.close()


def test_a_journal_truncated_to_zero_bytes_is_refused_unless_accepted(path: Path) -> None:
    _journal_with_commits(path, 3)
    for suffix in ("", "-wal", "-shm"):
        p = path.with_name(path.name + suffix)
        if p.exists():
            p.write_bytes(b"")
    with pytest.raises(JournalLost, match="truncated or deleted"):
        Journal(path)
    journal = Journal(path, accept_loss=True)  # told to accept: starts on what is left, and says so next time
    try:
        assert journal.restore(retain_s=60).unfinished == []
    finally:
        journal.close()
    Journal(path).close()  # the accepted state is the new baseline


def test_a_lost_wal_is_detected(path: Path) -> None:
    journal = Journal(path)
    journal.record(job("first"), new=True)
    journal.flush()
    journal._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # 'first' reaches the main file
    journal._db.execute("PRAGMA wal_autocheckpoint=0")
    for i in range(3):
        journal.record(job(f"later{i}"), new=True)
        journal.flush()
    journal._write_side(force=True)
    # Simulate a crash: copy the files as they are now, WAL included, before close() checkpoints them.
    snapshot = {s: path.with_name(path.name + s).read_bytes() for s in ("", "-wal")}
    journal.close()
    path.write_bytes(snapshot[""])
    path.with_name(path.name + "-wal").unlink(missing_ok=True)
    path.with_name(path.name + "-shm").unlink(missing_ok=True)
    with pytest.raises(JournalLost, match="WAL file lost or garbled"):
        Journal(path)


def test_a_garbled_wal_is_detected(path: Path) -> None:
    journal = Journal(path)
    journal._db.execute("PRAGMA wal_autocheckpoint=0")
    for i in range(3):
        journal.record(job(f"j{i}"), new=True)
        journal.flush()
    journal._write_side(force=True)
    main, wal = path.read_bytes(), path.with_name(path.name + "-wal").read_bytes()
    journal.close()
    garbled = bytearray(wal)
    for i in range(40, len(garbled), 97):  # flip bytes through every frame: checksums no longer match
        garbled[i] ^= 0xFF
    path.write_bytes(main)
    path.with_name(path.name + "-wal").write_bytes(bytes(garbled))
    path.with_name(path.name + "-shm").unlink(missing_ok=True)
    with pytest.raises(JournalLost):
        Journal(path)


def test_a_foreign_schema_or_a_non_database_is_refused(path: Path, tmp_path: Path) -> None:
    path.parent.mkdir(parents=True)
    with sqlite3.connect(str(path)) as db:
        db.execute("CREATE TABLE jobs (id INTEGER, payload TEXT)")
    with pytest.raises(JournalCorrupt, match="another schema"):
        Journal(path)
    other = tmp_path / "other.sqlite3"
    other.write_bytes(b"this is not an SQLite file at all, just text " * 100)
    with pytest.raises(JournalCorrupt, match="cannot be used"):
        Journal(other)


def test_a_second_lock_on_the_state_dir_names_the_owner(tmp_path: Path) -> None:
    first = StateLock([tmp_path / "state"])
    first.acquire()
    try:
        with pytest.raises(StateDirLocked, match=f"pid {os.getpid()}"):
            StateLock([tmp_path / "state"]).acquire()
    finally:
        first.release()
    again = StateLock([tmp_path / "state"])
    again.acquire()  # released: free again
    again.release()


def test_restored_jobs_survive_an_unchanged_restart(path: Path) -> None:
    _journal_with_commits(path, 2)
    journal = Journal(path)
    try:
        restored = journal.restore(retain_s=60)
        assert sorted(j.job_id for j in restored.unfinished) == ["j0", "j1"]
        assert all(j.state is JobState.QUEUED for j in restored.unfinished)
    finally:
        journal.close()
