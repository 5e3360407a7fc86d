"""The broker process on bad state: a second broker, a lost journal, a read-only dir, a full disk."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest
import zmq

from tts_protocol import Command

from tts_broker.journal_witness import Mark, decode

from harness import BrokerProc, Proc, wait_for
from peers import RawClient, RawWorker

pytestmark = pytest.mark.timeout(90)


def run_broker(state_dir: Path, *extra: str, timeout_s: float = 30) -> subprocess.CompletedProcess:
    """A broker that is expected to refuse to start: its exit code and output."""
    args = [sys.executable, "-m", "tts_broker", "--frontend", "tcp://127.0.0.1:*", "--backend",
            "tcp://127.0.0.1:*", "--state-dir", str(state_dir), *extra]
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout_s)


def one_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return lines[0]


def test_a_second_broker_on_the_same_state_dir_exits_naming_the_first(
        broker_factory: Callable[..., BrokerProc]) -> None:
    first = broker_factory()
    assert first.proc is not None
    result = run_broker(first.state_dir)
    assert result.returncode == 4
    line = one_line(result)
    assert f"pid {first.proc.pid}" in line and "in use by another broker" in line
    assert first.proc.alive()


def test_a_journal_truncated_to_zero_bytes_stops_the_start_until_the_loss_is_accepted(
        broker_factory: Callable[..., BrokerProc], ctx: zmq.Context) -> None:
    b = broker_factory()
    client = RawClient(ctx, b.frontend)
    for i in range(3):
        client.submit(f"kept-{i}")
        client.recv_until(Command.ACCEPTED)
    client.close()
    b.stop()
    journal = b.state_dir / "journal.sqlite3"
    for suffix in ("", "-wal", "-shm"):
        p = journal.with_name(journal.name + suffix)
        if p.exists():
            p.write_bytes(b"")
    result = run_broker(b.state_dir)
    assert result.returncode == 5
    assert "lost data" in one_line(result) and "--accept-journal-loss" in result.stderr
    b.start(["--accept-journal-loss"])  # now it runs, on an empty journal
    assert "lost data" in b.log() and "accepted" in b.log()


def _submit(b: BrokerProc, ctx: zmq.Context, *job_ids: str) -> None:
    client = RawClient(ctx, b.frontend)
    for job_id in job_ids:
        client.submit(job_id)
        client.recv_until(Command.ACCEPTED)
    client.close()


def test_a_journal_deleted_with_its_seq_file_is_refused_naming_broker_lock(
        broker_factory: Callable[..., BrokerProc], ctx: zmq.Context) -> None:
    b = broker_factory()
    _submit(b, ctx, "kept-0", "kept-1", "kept-2")
    b.kill()  # not stop(): a drain would wait for the queued jobs
    journal = b.state_dir / "journal.sqlite3"
    for suffix in ("", "-wal", "-shm", ".seq"):
        journal.with_name(journal.name + suffix).unlink(missing_ok=True)
    result = run_broker(b.state_dir)
    assert result.returncode == 5, result.stderr
    line = one_line(result)
    assert "lost data" in line and "truncated or deleted" in line and "--accept-journal-loss" in line
    assert f"{b.state_dir / 'broker.lock'} says it had" in line and "journal.sqlite3.seq says nothing" in line
    b.start(["--accept-journal-loss"])  # the operator's way out still works
    assert "lost data" in b.log() and "accepted" in b.log()
    _submit(b, ctx, "after")
    b.kill()
    b.start()  # the accepted state is the new baseline


def test_a_commit_lost_right_after_a_restart_is_refused(broker_factory: Callable[..., BrokerProc],
                                                         ctx: zmq.Context) -> None:
    b = broker_factory()
    _submit(b, ctx, "before-0", "before-1")
    b.kill()
    journal = b.state_dir / "journal.sqlite3"
    db = sqlite3.connect(str(journal))
    try:  # what a clean stop does: the main file holds both, the WAL is empty
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
    b.start()
    _submit(b, ctx, "right-after-start")
    b.kill()  # kill -9 at once: the commit is only in the WAL
    for suffix in ("-wal", "-shm"):
        (b.state_dir / f"journal.sqlite3{suffix}").unlink(missing_ok=True)
    result = run_broker(b.state_dir)
    assert result.returncode == 5, result.stderr
    line = one_line(result)
    assert "WAL file lost or garbled" in line, line


def test_a_garbled_wal_after_a_crash_is_detected(broker_factory: Callable[..., BrokerProc],
                                                 ctx: zmq.Context) -> None:
    b = broker_factory()
    client = RawClient(ctx, b.frontend)
    for i in range(5):
        client.submit(f"job-{i}")
        client.recv_until(Command.ACCEPTED)
    client.close()
    wal = b.state_dir / "journal.sqlite3-wal"
    side = b.state_dir / "journal.sqlite3.seq"
    assert (decode(side.read_bytes()) or Mark("", 0)).seq >= 5  # written after each commit, before ACCEPTED
    b.kill()  # kill -9: the WAL is not checkpointed into the main file
    data = bytearray(wal.read_bytes())
    assert len(data) > 32
    for i in range(40, len(data), 101):
        data[i] ^= 0xFF
    wal.write_bytes(bytes(data))
    result = run_broker(b.state_dir)
    assert result.returncode == 5, result.stderr
    assert "lost data" in one_line(result)


def _mount_tmpfs(target: Path, size: str, *opts: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (this test runs as an unprivileged user)")
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *opts]), "tmpfs", str(target)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}), e.g. no CAP_SYS_ADMIN")


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    mounted: list[Path] = []

    def mount(size: str = "4m", *opts: str) -> Path:
        target = tmp_path / f"tmpfs-{uuid.uuid4().hex[:6]}"
        _mount_tmpfs(target, size, *opts)
        mounted.append(target)
        return target

    yield mount
    for target in mounted:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


def test_a_read_only_state_dir_is_one_line_not_a_traceback(tmp_path: Path,
                                                            tmpfs: Callable[..., Path]) -> None:
    if os.geteuid() == 0:
        state = tmpfs("4m") / "state"
        state.mkdir()
        remount = subprocess.run(["mount", "-o", "remount,ro", str(state.parent)], capture_output=True, text=True)
        if remount.returncode != 0:
            pytest.skip(f"cannot remount the tmpfs read-only: {remount.stderr.strip()}")
    else:
        state = tmp_path / "ro-state"
        state.mkdir()
        state.chmod(0o555)
    result = run_broker(state)
    assert result.returncode == 5, result.stderr
    line = one_line(result)
    assert str(state) in line and ("Read-only" in line or "ermission" in line)


def test_disk_full_keeps_the_broker_running_refuses_new_jobs_and_recovers(
        tmp_path: Path, tmpfs: Callable[..., Path], procs: list[Proc], ctx: zmq.Context) -> None:
    disk = tmpfs("3m")
    state = disk / "state"
    b = BrokerProc(tmp_path, procs, ["--journal-retry-s", "0.2", "--no-cache", "--heartbeat-interval-s", "10"])
    b.state_dir = state
    b.start()
    worker = RawWorker(ctx, b.backend, engine="tone", model="tone-v1")
    client = RawClient(ctx, b.frontend)
    client.submit("before", model="tone")
    client.recv_until(Command.ACCEPTED)
    first = worker.next_job()
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:  # fill the disk to the last byte
        for chunk in (65536, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError:
                pass
    finally:
        os.close(fd)
    # A result of a journaled job needs a commit: it waits, the broker stays up.
    worker.result(first, pcm=b"\x01\x00" * 40_000)
    view = wait_for(lambda: (v := client.status()).jobs["journal_fault"] and v, 15, what="journal fault in status")
    assert "full" in view.jobs["journal_fault"].lower(), view.jobs
    assert view.jobs["journal_pending"] >= 1 and view.jobs["journal_faults"] == 1
    client.submit("during", text="refused while the disk is full", model="tone")
    error = client.recv_until(Command.ERROR, timeout_s=15)
    assert error.body.job_id == "during"
    assert error.body.code == "journal_unavailable" and error.body.retryable
    filler.unlink()  # space returns
    result = client.recv_until(Command.RESULT, timeout_s=20, skip=(Command.ERROR,))
    assert result.body.job_id == "before"
    wait_for(lambda: client.status().jobs["journal_fault"] is None, 20, what="journal recovers")
    client.submit("after", text="accepted again", model="tone")
    client.recv_until(Command.ACCEPTED)
    worker.result(worker.next_job())
    assert client.recv_until(Command.RESULT).body.job_id == "after"
    assert b.proc is not None and b.proc.alive()
    worker.close()
    client.close()
    assert b.stop() == 0
    assert "journal commit failed" in b.log() and "journal writes again" in b.log()


def test_a_database_lock_held_by_another_program_is_a_fault_not_an_exit(
        broker_factory: Callable[..., BrokerProc], ctx: zmq.Context) -> None:
    b = broker_factory("--journal-retry-s", "0.2", "--drain-grace-s", "0")
    client = RawClient(ctx, b.frontend)
    client.ping()
    other = sqlite3.connect(str(b.state_dir / "journal.sqlite3"), isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")  # a backup tool, say
        client.submit("waits", text="accepted once the lock is gone")
        view = wait_for(lambda: (v := client.status()).jobs["journal_fault"] and v, 15, what="fault in status")
        assert "locked" in view.jobs["journal_fault"]
        client.submit("refused", text="while the journal is locked")
        error = client.recv_until(Command.ERROR)
        assert (error.body.job_id, error.body.code, error.body.retryable) == ("refused", "journal_unavailable", True)
        other.execute("ROLLBACK")
        wait_for(lambda: client.status().jobs["journal_fault"] is None, 15, what="journal recovers")
        assert b.proc is not None and b.proc.alive()
    finally:
        other.close()
        client.close()
    assert b.stop() == 0
