"""The broker's journal: every accepted job and its final answer, in SQLite (WAL), so a restart loses nothing.

Writes are buffered and committed in groups: the broker records the jobs of one batch of messages, commits
once, and only then sends their ACCEPTED replies. A job the broker has acknowledged is therefore on disk.
With `synchronous=NORMAL` (the default) a commit survives the broker process dying (kill -9); `full` also
survives power loss at the cost of an fsync per group.

Faults: a commit that fails (disk full, a database another program holds locked, an I/O error) raises
JournalUnavailable and keeps its rows pending, so the next flush() writes them; the server keeps the messages
that wait for the commit and refuses new jobs until a flush succeeds again.

Size: the file uses auto_vacuum=INCREMENTAL, and pruning (journal_max_audio_mb, result_ttl_s) gives the
freed pages back at once, so the file stays near what it holds instead of its largest size ever.

Loss detection: the table `journal_meta` holds a random `generation` and `seq`, the number of the last
commit, written in the same transaction as the rows. After every commit both are also copied to two
witnesses outside the journal (journal_witness.py): the side file `<journal>.seq` and the state dir's
`broker.lock` (after the pid), each a fixed-size checksummed record rewritten in place with one pwrite. At
start the journal must have at least the seq of the best witness (the one with the highest seq), in the same
generation: a file truncated to 0 bytes, recreated, replaced, or whose WAL was deleted or garbled (SQLite then
ignores the bad frames) has less, and opening it raises JournalLost, naming the witness, unless the loss is
accepted (then a new generation starts, its seq going on from the highest seen, so the witnesses agree
again). Deleting the journal together with its `.seq` is still caught by `broker.lock`, and a loss right
after a start or a commit is caught too: there is no interval between a commit and its witnesses. The
witnesses are written after the commit and without fsync, so they may lag the journal (never lead it, short
of power loss with journal_sync=normal, which can lose the last commits and is then reported as a loss too);
a torn or garbled record counts as absent and is logged.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable, Optional

import msgpack

from tts_protocol.constants import JobState, Priority
from tts_protocol.messages import ErrorInfo, Submit

from tts_broker.jobs import Job
from tts_broker.journal_witness import Mark, Witnesses, WitnessFile, best
from tts_broker.statedir import PID_BYTES, JournalCorrupt, JournalLost, StateDirUnusable

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
CREATE TABLE IF NOT EXISTS journal_meta (key TEXT PRIMARY KEY, value NOT NULL);
"""
_COLUMNS = ("job_id", "request", "model", "state", "attempt", "accepted_wall", "deadline_wall", "finished_wall",
            "workers", "error", "result", "audio", "cached", "owner")
_BUSY_TIMEOUT_S = 0.05  # a held lock fails the commit quickly (it is retried) instead of stalling the loop


class JournalUnavailable(Exception):
    """A commit failed (disk full, database locked, I/O error); its rows stay pending for the next flush."""


@dataclasses.dataclass(frozen=True, slots=True)
class Restored:
    """Jobs read back at start-up: unfinished ones to requeue and finished ones to retain."""

    unfinished: list[Job]
    finished: list[Job]
    running: tuple[str, ...] = ()  # ids of the unfinished jobs that were running (leased) when last written


class PendingRows:
    """The jobs a journal writes at its next flush, for either backend (SQLite here, PostgreSQL in journal_pg)."""

    def __init__(self) -> None:
        self._new: dict[str, Job] = {}  # whole row to write
        self._changed: dict[str, Job] = {}  # state/attempt/outcome columns to update

    @property
    def pending(self) -> int:
        return len(self._new) + len(self._changed)

    def record(self, job: Job, *, new: bool = False) -> None:
        """Note a new (or re-opened) job, or a change to a known one; written at the next flush()."""
        if new or job.job_id in self._new:
            self._new[job.job_id] = job
            self._changed.pop(job.job_id, None)
        else:
            self._changed[job.job_id] = job


class Journal(PendingRows):
    """Group-committed record of jobs (see module docstring)."""

    def __init__(self, path: Path, *, synchronous: str = "normal", accept_loss: bool = False,
                 lock_file: Optional[Path] = None) -> None:
        """`lock_file`: the state dir's broker.lock, the second witness (the broker passes it; None: only `.seq`)."""
        super().__init__()
        self.path = path
        self.side_path = path.with_name(path.name + ".seq")
        witnesses = [WitnessFile(self.side_path)]
        if lock_file is not None:
            witnesses.append(WitnessFile(lock_file, offset=PID_BYTES))
        self._witnesses = Witnesses(witnesses)
        self.commits = 0
        self.audio_bytes = 0  # audio BLOBs of finished jobs in the file
        self.pruned_jobs = 0
        self.pruned_bytes = 0
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False,
                                       timeout=_BUSY_TIMEOUT_S)
        except (OSError, sqlite3.Error) as exc:
            raise StateDirUnusable(f"cannot open the journal {path}: {exc}") from exc
        try:
            self._open(synchronous, accept_loss)
        except BaseException:
            self._db.close()
            self._witnesses.close()
            raise

    def _open(self, synchronous: str, accept_loss: bool) -> None:
        db, path = self._db, self.path
        said = self._witnesses.read()  # before SQLite opens (or creates) anything
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
            db.execute("PRAGMA wal_autocheckpoint=4000")  # fewer, larger checkpoints: steadier latency
            _incremental_vacuum_on(db, path)
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise JournalCorrupt(f"journal {path} failed its integrity check: {check}")
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "jobs" in tables:
                columns = tuple(row[1] for row in db.execute("PRAGMA table_info(jobs)"))
                if columns + ("owner",) == _COLUMNS:  # written before job owners (CURVE) existed
                    db.execute("ALTER TABLE jobs ADD COLUMN owner TEXT")
                    columns = _COLUMNS
                if columns != _COLUMNS:
                    raise JournalCorrupt(f"journal {path} has a table `jobs` of another schema "
                                         f"({', '.join(columns)}); not a tts-broker journal of this version")
            elif tables - {"journal_meta"}:
                raise JournalCorrupt(f"{path} is an SQLite file of something else (tables {', '.join(sorted(tables))})")
            db.executescript(_SCHEMA)
            meta = dict(db.execute("SELECT key, value FROM journal_meta").fetchall())
            if "generation" not in meta and "jobs" in tables and all(mark is None for _, mark in said):
                log.info("journal %s predates loss detection; adopting it", path)
            lost = _loss(meta, said)
            if lost:
                if not accept_loss:
                    raise JournalLost(f"journal {path} lost data: {lost}; start with --accept-journal-loss to "
                                      "run on what is left (its jobs are gone)")
                log.warning("journal %s lost data (%s); accepted: starting on what is left", path, lost)
            if lost or "generation" not in meta:
                # seq goes on from the highest any witness saw: the newest generation stays the best witness
                seen = max([int(meta.get("seq", 0))] + [mark.seq for _, mark in said if mark is not None])
                meta = {"generation": secrets.token_hex(8), "seq": seen}
                db.executemany("INSERT OR REPLACE INTO journal_meta (key, value) VALUES (?, ?)", meta.items())
            self.generation = str(meta["generation"])
            self.seq = int(meta["seq"])
            self.audio_bytes = int(db.execute("SELECT COALESCE(SUM(LENGTH(audio)), 0) FROM jobs").fetchone()[0])
        except sqlite3.DatabaseError as exc:
            raise JournalCorrupt(f"journal {path} cannot be used: {exc}") from exc
        self._witnesses.write(Mark(self.generation, self.seq))

    def flush(self) -> None:
        """Write every noted job in one transaction; raises JournalUnavailable (rows kept) if that fails."""
        if not self._new and not self._changed:
            return
        new_rows = [_row(job) for job in self._new.values()]
        updates = [_update(job) for job in self._changed.values()]
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
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
            db.execute("UPDATE journal_meta SET value=? WHERE key='seq'", (self.seq + 1,))
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(exc)
            raise JournalUnavailable(_describe(exc)) from exc
        self._new.clear()
        self._changed.clear()
        self.seq += 1
        self.commits += 1
        self.audio_bytes += sum(len(row[11]) for row in new_rows if row[11]) + \
            sum(len(row[6]) for row in updates if row[6])
        self._witnesses.write(Mark(self.generation, self.seq))

    def _rollback(self, cause: sqlite3.Error) -> None:
        if not self._db.in_transaction:
            return
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error as exc:  # say so, but the commit's failure is what the caller must hear about
            log.warning("journal: ROLLBACK failed too (%s) after: %s", exc, _describe(cause))

    def forget_finished_before(self, wall: float, *, failed_before: Optional[float] = None) -> int:
        """Delete jobs finished before `wall`; failed ones (dead letters) only if finished before failed_before."""
        failed_wall = wall if failed_before is None else min(wall, failed_before)
        try:
            cur = self._db.execute("DELETE FROM jobs WHERE finished_wall IS NOT NULL AND ((state != ? AND"
                                   " finished_wall < ?) OR (state = ? AND finished_wall < ?))",
                                   (JobState.FAILED.value, wall, JobState.FAILED.value, failed_wall))
        except sqlite3.Error as exc:
            raise JournalUnavailable(_describe(exc)) from exc
        if cur.rowcount:
            self.audio_bytes = self._audio_total()
            self._give_back()
        return cur.rowcount

    def _give_back(self) -> None:
        """Return the pages of deleted rows to the file system: without it the file keeps its largest size."""
        try:
            self._db.executescript("PRAGMA incremental_vacuum;")  # sqlite3_exec steps it to the end
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()  # the shrink reaches the main file
        except sqlite3.Error as exc:
            log.warning("journal: incremental vacuum failed, retried after the next prune: %s", _describe(exc))

    def prune_audio(self, max_bytes: int) -> int:
        """Delete the oldest finished jobs with audio until their audio fits `max_bytes`; returns jobs deleted."""
        if self.audio_bytes <= max_bytes:
            return 0
        excess = self.audio_bytes - max_bytes
        doomed: list[str] = []
        freed = 0
        try:
            for job_id, size in self._db.execute(
                "SELECT job_id, LENGTH(audio) FROM jobs WHERE audio IS NOT NULL AND finished_wall IS NOT NULL"
                " ORDER BY finished_wall"
            ):
                doomed.append(job_id)
                freed += size or 0
                if freed >= excess:
                    break
            self._db.executemany("DELETE FROM jobs WHERE job_id=?", [(job_id,) for job_id in doomed])
        except sqlite3.Error as exc:
            raise JournalUnavailable(_describe(exc)) from exc
        self.pruned_jobs += len(doomed)
        self.pruned_bytes += freed
        self.audio_bytes = self._audio_total()
        self._give_back()
        log.info("journal: %d oldest finished jobs (%d audio bytes) pruned to keep audio under %d bytes",
                 len(doomed), freed, max_bytes)
        return len(doomed)

    def _audio_total(self) -> int:
        return int(self._db.execute("SELECT COALESCE(SUM(LENGTH(audio)), 0) FROM jobs").fetchone()[0])

    def restore(self, *, retain_s: float, dead_letter_s: Optional[float] = None) -> Restored:
        """Read jobs back: unfinished ones become queued again; finished ones younger than retain_s are kept,
        failed ones (dead letters) younger than dead_letter_s (default retain_s)."""
        return read_rows(self._db.execute(
            "SELECT job_id, request, model, state, attempt, accepted_wall, deadline_wall, finished_wall, workers,"
            " error, result, audio, cached, owner FROM jobs ORDER BY accepted_wall"
        ), retain_s=retain_s, dead_letter_s=dead_letter_s)

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._witnesses.close()  # current already: written after every commit
            self._db.close()


def read_rows(rows: Iterable[tuple[Any, ...]], *, retain_s: float,
              dead_letter_s: Optional[float] = None) -> Restored:
    """Jobs from journal rows (either backend): unfinished ones queued again, finished ones younger than retain_s,
    failed ones (dead letters) younger than dead_letter_s (default retain_s)."""
    keep_failed_s = retain_s if dead_letter_s is None else max(retain_s, dead_letter_s)
    now_wall, now = time.time(), time.monotonic()
    unfinished: list[Job] = []
    finished: list[Job] = []
    skipped: list[str] = []
    running: list[str] = []
    first_error = ""
    for row in rows:
        try:
            job = _job(row, now_wall, now)
        except Exception as exc:  # another version's row, or a request past today's limits: skip it
            if not skipped:
                first_error = f"{type(exc).__name__}: {str(exc)[:300]}"
            skipped.append(str(row[0])[:128])
            continue
        if job.state.finished:
            keep_s = keep_failed_s if job.state is JobState.FAILED else retain_s
            if job.finished_at is not None and now - job.finished_at <= keep_s:
                finished.append(job)
        else:
            if job.state is JobState.RUNNING:  # its attempt died with the broker (or survives on its worker)
                running.append(job.job_id)
                job.move_to(JobState.QUEUED)
            unfinished.append(job)
    if skipped:
        log.warning("journal: %d unreadable or out-of-range rows skipped (jobs %s%s); first: %s", len(skipped),
                    ", ".join(repr(job_id) for job_id in skipped[:5]), ", ..." if len(skipped) > 5 else "",
                    first_error)
    return Restored(unfinished, finished, tuple(running))


def _incremental_vacuum_on(db: sqlite3.Connection, path: Path) -> None:
    """auto_vacuum=INCREMENTAL, so pruned audio shrinks the file (a journal of an older version: one VACUUM)."""
    if int(db.execute("PRAGMA auto_vacuum").fetchone()[0]) == 2:
        return
    db.execute("PRAGMA auto_vacuum=INCREMENTAL")
    if int(db.execute("PRAGMA auto_vacuum").fetchone()[0]) != 2:  # the file exists already: it takes a VACUUM
        if db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone() is not None:
            log.info("journal %s: converting to incremental vacuum (one VACUUM)", path)
        db.execute("VACUUM")


def _loss(meta: dict[str, Any], said: list[tuple[WitnessFile, Optional[Mark]]]) -> str:
    """Why the journal holds less than its best witness says it had, or "" when it does not."""
    found = best(said)
    if found is None:
        return ""
    witness, mark = found
    if "generation" not in meta:
        lost = f"it is empty or new, but {witness.path} says it had {mark.seq} commits (truncated or deleted?)"
    elif str(meta["generation"]) != mark.generation:
        lost = (f"it is another journal (generation {meta['generation']}) than the one {witness.path} names "
                f"(generation {mark.generation}, {mark.seq} commits; replaced?)")
    elif int(meta["seq"]) < mark.seq:
        lost = (f"it ends at commit {meta['seq']} but {witness.path} says it reached {mark.seq} (WAL file lost or "
                "garbled, or power lost with journal_sync=normal)")
    else:
        return ""
    for other, other_mark in said:
        if other is not witness:
            lost += (f"; {other.path.name} says nothing" if other_mark is None else
                     f"; {other.path.name} says {other_mark.seq} commits of generation {other_mark.generation}")
    return lost


def _describe(exc: sqlite3.Error) -> str:
    name = getattr(exc, "sqlite_errorname", "")
    return f"{name}: {exc}" if name else str(exc)


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

