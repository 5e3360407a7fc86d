"""The broker's claim on its state dir, and the start-up errors that end the process with one line.

Two brokers on one journal would both requeue the same unfinished jobs and both run them, so the broker
holds an exclusive `fcntl.flock` on `STATE_DIR/broker.lock` (and beside a journal kept elsewhere) for its
whole life. The kernel drops the lock when the process ends, even on kill -9, so a stale file never blocks
a restart.

The file holds the owner's pid in its first PID_BYTES bytes (the pid, spaces, a newline: `head -n1` or
`read pid` gets it), for the message a second broker prints. The state dir's lock file also carries a
witness of the journal after that (journal_witness.py), so it is rewritten in place, never truncated.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path
from typing import Iterable

log = logging.getLogger(__name__)

LOCK_NAME = "broker.lock"
#: Bytes of `broker.lock` that hold the pid; the journal's witness record follows them.
PID_BYTES = 32

#: `tts-broker` exit codes (README, "Running the broker").
EXIT_USAGE = 2
EXIT_BIND = 3
EXIT_LOCKED = 4
EXIT_STATE = 5


class BrokerStartError(Exception):
    """The broker cannot start on this state; `str()` is the one line to print, `exit_code` the status."""

    exit_code = EXIT_STATE


class StateDirLocked(BrokerStartError):
    """Another live broker holds the state dir."""

    exit_code = EXIT_LOCKED


class StateDirUnusable(BrokerStartError):
    """The state dir cannot be created, written or locked (read-only file system, permissions)."""


class JournalLost(BrokerStartError):
    """The journal has less than it had: truncated, recreated, or its WAL lost or garbled."""


class JournalCorrupt(BrokerStartError):
    """The journal is not a journal this broker can read: integrity check failed or a foreign schema."""


class StateLock:
    """Exclusive locks on the broker's state folders, held until release()."""

    def __init__(self, folders: Iterable[Path]) -> None:
        self.folders = sorted({folder.resolve() for folder in folders})
        self._fds: list[int] = []

    def acquire(self) -> None:
        try:
            for folder in self.folders:
                self._fds.append(_lock(folder))
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        for fd in self._fds:
            os.close(fd)  # closing the descriptor drops the flock
        self._fds.clear()


def _lock(folder: Path) -> int:
    path = folder / LOCK_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StateDirUnusable(f"state dir {folder} is not usable: {exc.strerror or exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        owner = read_pid(fd) or "unknown"
        os.close(fd)
        raise StateDirLocked(f"state dir {folder} is in use by another broker (pid {owner}); "
                             "stop it or give this one another --state-dir") from exc
    except OSError as exc:
        os.close(fd)
        raise StateDirUnusable(f"cannot lock {path}: {exc.strerror or exc}") from exc
    try:  # in place, not truncated: the journal's witness after the pid must survive a restart
        os.pwrite(fd, pid_field(os.getpid()), 0)
    except OSError as exc:  # a full disk must not stop a broker that holds the lock; only the message suffers
        log.warning("cannot write the pid into %s: %s", path, exc)
    return fd


def pid_field(pid: int) -> bytes:
    """The first PID_BYTES bytes of a lock file: the pid, padded with spaces, then a newline."""
    return str(pid).encode().ljust(PID_BYTES - 1) + b"\n"


def read_pid(fd: int) -> str:
    """The pid a lock file names ("" if none): this layout, or an older broker's bare `pid\\n`."""
    return os.pread(fd, PID_BYTES, 0).decode("ascii", "replace").split("\n", 1)[0].strip()
