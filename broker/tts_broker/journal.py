"""The broker's journal: every accepted job and its final answer, in SQLite (WAL), so a restart loses nothing.

Writes are buffered and committed in groups: the broker records the jobs of one batch of messages, commits
once, and only then sends their ACCEPTED replies. A job the broker has acknowledged is therefore on disk.
With `synchronous=NORMAL` (the default) a commit survives the broker process dying (kill -9); `full` also
survives power loss at the cost of an fsync per group.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any, Optional

import msgpack

from tts_protocol.constants import JobState, Priority
from tts_protocol.messages import ErrorInfo, Submit

from tts_broker.jobs import Job

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    request BLOB NOT NULL,
    model TEXT,
    state TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    accepted_wall REAL NOT NULL,
    deadline_wall REAL,
    finished_wall REAL,
    workers TEXT NOT NULL,
    error TEXT,
    result BLOB,
    audio BLOB,
    cached INTEGER NOT NULL DEFAULT 0,
    owner TEXT
);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_wall);
"""


@dataclasses.dataclass(frozen=True, slots=True)
class Restored:
    """Jobs read back at start-up: unfinished ones to requeue and finished ones to retain."""

    unfinished: list[Job]
    finished: list[Job]


class Journal:
    """Group-committed record of jobs (see module docstring)."""

    def __init__(self, path: Path, *, synchronous: str = "normal") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
        self._db.execute("PRAGMA wal_autocheckpoint=4000")  # fewer, larger checkpoints: steadier latency
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        if "owner" not in columns:  # a journal written before job owners (CURVE) existed
            self._db.execute("ALTER TABLE jobs ADD COLUMN owner TEXT")
        self._new: dict[str, Job] = {}  # whole row to write
        self._changed: dict[str, Job] = {}  # state/attempt/outcome columns to update
        self.commits = 0

    def record(self, job: Job, *, new: bool = False) -> None:
        """Note a new (or re-opened) job, or a change to a known one; written at the next flush()."""
        if new or job.job_id in self._new:
            self._new[job.job_id] = job
            self._changed.pop(job.job_id, None)
        else:
            self._changed[job.job_id] = job

    def flush(self) -> None:
        """Write every noted job in one transaction."""
        if not self._new and not self._changed:
            return
        new_rows = [_row(job) for job in self._new.values()]
        updates = [_update(job) for job in self._changed.values()]
        self._new.clear()
        self._changed.clear()
        db = self._db
        db.execute("BEGIN")
        try:
            if new_rows:
                db.executemany(
                    "INSERT OR REPLACE INTO jobs (job_id, request, model, state, attempt, accepted_wall,"
                    " deadline_wall, finished_wall, workers, error, result, audio, cached, owner)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    new_rows,
                )
            if updates:
                db.executemany(
                    "UPDATE jobs SET state=?, attempt=?, finished_wall=?, workers=?, error=?, result=?, audio=?,"
                    " cached=? WHERE job_id=?",
                    updates,
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.commits += 1

    def forget_finished_before(self, wall: float) -> int:
        cur = self._db.execute("DELETE FROM jobs WHERE finished_wall IS NOT NULL AND finished_wall < ?", (wall,))
        return cur.rowcount

    def restore(self, *, retain_s: float) -> Restored:
        """Read jobs back: unfinished ones become queued again; finished ones younger than retain_s are kept."""
        now_wall, now = time.time(), time.monotonic()
        unfinished: list[Job] = []
        finished: list[Job] = []
        for row in self._db.execute(
            "SELECT job_id, request, model, state, attempt, accepted_wall, deadline_wall, finished_wall, workers,"
            " error, result, audio, cached, owner FROM jobs ORDER BY accepted_wall"
        ):
            try:
                job = _job(row, now_wall, now)
            except Exception as exc:  # a row written by another version: skip it, loudly
                log.warning("journal row for job %s unreadable, skipped: %s", row[0], exc)
                continue
            if job.state.finished:
                if job.finished_at is not None and now - job.finished_at <= retain_s:
                    finished.append(job)
            else:
                job.state = JobState.QUEUED
                unfinished.append(job)
        return Restored(unfinished, finished)

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._db.close()


def _outcome(job: Job) -> tuple[Any, ...]:
    """The columns that change as a job runs: state, attempt, finished, workers, error, result, audio, cached."""
    finished = job.state.finished
    error = json.dumps({"code": job.error.code, "message": job.error.message, "retryable": job.error.retryable}) \
        if job.error else None
    audio = job.audio_data() if finished and job.audio is not None else None
    return (job.state.value, job.attempt, time.time() if finished else None, json.dumps(job.workers_tried), error,
            job.result or None, audio, int(job.cached))


def _update(job: Job) -> tuple[Any, ...]:
    return (*_outcome(job), job.job_id)


def _row(job: Job) -> tuple[Any, ...]:
    state, attempt, finished, workers, error, result, audio, cached = _outcome(job)
    deadline = job.accepted_wall + job.request.deadline_ms / 1000 if job.request.deadline_ms else None
    return (job.job_id, msgpack.packb(job.request.to_wire(), use_bin_type=True), job.model, state, attempt,
            job.accepted_wall, deadline, finished, workers, error, result, audio, cached, job.owner)


def _job(row: tuple[Any, ...], now_wall: float, now: float) -> Job:
    (job_id, request, model, state, attempt, accepted_wall, deadline_wall, finished_wall, workers, error, result,
     audio, cached, owner) = row
    req = Submit.model_validate(msgpack.unpackb(request, raw=False))

    def mono(wall: Optional[float]) -> Optional[float]:
        return None if wall is None else now - (now_wall - wall)

    job = Job(request=req, priority=Priority(req.priority), model=model, accepted_at=mono(accepted_wall) or now,
              accepted_wall=accepted_wall, deadline=mono(deadline_wall), state=JobState(state), attempt=attempt)
    job.workers_tried = list(json.loads(workers))
    job.finished_at = mono(finished_wall)
    job.result = result or b""
    job.audio = audio
    job.cached = bool(cached)
    job.owner = owner
    if error:
        job.error = ErrorInfo(**json.loads(error))
    return job

