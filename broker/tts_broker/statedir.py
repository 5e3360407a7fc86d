"""The broker's claim on its state dir, and the start-up errors that end the process with one line.

Two brokers on one journal would both requeue the same unfinished jobs and both run them, so the broker
holds an exclusive `fcntl.flock` on `STATE_DIR/broker.lock` (and beside a journal kept elsewhere) for its
whole life. The kernel drops the lock when the process ends, even on kill -9, so a stale file never blocks
a restart. The file holds the owner's pid, for the message a second broker prints.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path
from typing import Iterable

log = logging.getLogger(__name__)

LOCK_NAME = "broker.lock"

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
        owner = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise StateDirLocked(f"state dir {folder} is in use by another broker (pid {owner}); "
                             "stop it or give this one another --state-dir") from exc
    except OSError as exc:
        os.close(fd)
        raise StateDirUnusable(f"cannot lock {path}: {exc.strerror or exc}") from exc
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as exc:  # a full disk must not stop a broker that holds the lock; only the message suffers
        log.warning("cannot write the pid into %s: %s", path, exc)
    return fd
