"""Journal faults in-process on real SQLite files: a locked database, lost content, a foreign schema, witnesses."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Optional

import pytest

from tts_protocol.constants import JobState
from tts_protocol.messages import Submit

from tts_broker.hooks import JournalHook
from tts_broker.jobs import Job
from tts_broker.journal import Journal, JournalUnavailable
from tts_broker.statedir import LOCK_NAME, PID_BYTES, JournalCorrupt, JournalLost, StateDirLocked, StateLock

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


def _journal_with_commits(path: Path, n: int, lock: Optional[Path] = None) -> None:
    journal = Journal(path) if lock is None else Journal(path, lock_file=lock)
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


# The second witness: the state dir's broker.lock (journal_witness.py).

@pytest.fixture
def lock(tmp_path: Path) -> Path:
    return tmp_path / "state" / LOCK_NAME


def _commit(journal: Journal, job_id: str) -> None:
    journal.record(job(job_id), new=True)
    journal.flush()


def test_a_journal_deleted_with_its_seq_file_is_caught_by_the_lock_file(path: Path, lock: Path) -> None:
    journal = Journal(path, lock_file=lock)
    for i in range(4):
        _commit(journal, f"j{i}")
    journal.close()
    for suffix in ("", "-wal", "-shm", ".seq"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    with pytest.raises(JournalLost, match="truncated or deleted") as lost:
        Journal(path, lock_file=lock)
    message = str(lost.value)
    assert f"{lock} says it had 4 commits" in message and "journal.sqlite3.seq says nothing" in message
    assert "--accept-journal-loss" in message


def test_a_commit_lost_right_after_a_start_is_detected(path: Path) -> None:
    _journal_with_commits(path, 3)  # closed: the 3 commits are in the main file
    journal = Journal(path)  # the side file alone: it is current after every commit, not every 0.2 s
    journal.record(job("right-after-start"), new=True)
    journal.flush()  # well within 0.2 s of the start
    # Crash now (kill -9: the side file is as it is) and lose the WAL that holds the commit.
    snapshot = {s: path.with_name(path.name + s).read_bytes() for s in ("", ".seq")}
    journal.close()
    for suffix, data in snapshot.items():
        path.with_name(path.name + suffix).write_bytes(data)
    path.with_name(path.name + "-wal").unlink(missing_ok=True)
    path.with_name(path.name + "-shm").unlink(missing_ok=True)
    with pytest.raises(JournalLost, match="ends at commit 3 but .* says it reached 4 .*WAL file lost"):
        Journal(path)


def test_a_garbled_witness_is_ignored_with_a_log_line(path: Path, lock: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    _journal_with_commits(path, 2, lock)
    data = bytearray(lock.read_bytes())
    data[PID_BYTES + 40] ^= 0x01  # a bit flipped in the generation: the checksum no longer matches
    lock.write_bytes(bytes(data))
    side = path.with_name(path.name + ".seq")
    side.write_bytes(side.read_bytes()[:30])  # torn: half a record
    journal = Journal(path, lock_file=lock)  # both witnesses count as absent: it starts, and says why
    try:
        assert sorted(j.job_id for j in journal.restore(retain_s=60).unfinished) == ["j0", "j1"]
        garbled = [r.getMessage() for r in caplog.records if "garbled" in r.getMessage()]
        assert len(garbled) == 2 and any(str(lock) in m for m in garbled) and any(str(side) in m for m in garbled)
        _commit(journal, "j2")
    finally:
        journal.close()
    assert Journal(path, lock_file=lock).seq == 3  # rewritten at the next commit: readable again, and agreeing


def test_accepting_the_loss_starts_a_generation_both_witnesses_agree_on(path: Path, lock: Path) -> None:
    _journal_with_commits(path, 5, lock)
    for suffix in ("", "-wal", "-shm", ".seq"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    with pytest.raises(JournalLost):
        Journal(path, lock_file=lock)
    journal = Journal(path, lock_file=lock, accept_loss=True)
    try:
        assert journal.seq == 5  # goes on from the highest seen: the new generation is the best witness
        _commit(journal, "after")
    finally:
        journal.close()
    again = Journal(path, lock_file=lock)  # the new baseline: no loss
    try:
        assert again.seq == 6 and [j.job_id for j in again.restore(retain_s=60).unfinished] == ["after"]
    finally:
        again.close()
