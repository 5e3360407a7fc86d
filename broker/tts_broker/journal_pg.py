"""The journal in PostgreSQL: the same rows as the SQLite journal, written through the leadership session.

Same contract as journal.Journal (see journal_store.JournalStore): record() buffers, flush() writes one
transaction and raises JournalUnavailable with the rows kept if it fails, restore() reads jobs back. What
differs:

- every transaction first checks, under a row lock, that the journal's epoch is still this broker's
  (LeaderLink.fence): a deposed broker's write raises LeadershipLost instead of landing;
- every row carries the epoch of the broker that wrote it last;
- new rows are upserts, so a commit whose answer was lost (the connection broke after COMMIT was sent) can be
  written again without harm;
- finished jobs' audio is `bytea`, pruned to the same byte budget, so a client that reconnects to the next
  active broker after a failover gets its result without the job running again.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Optional

from tts_broker.hooks import JournalHook
from tts_broker.jobs import JobState
from tts_broker.journal import JournalUnavailable, PendingRows, Restored, _row, _update, read_rows
from tts_broker.leadership import LeaderLink, LeadershipLost, _one_line

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS tts_meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS tts_jobs (
    job_id text PRIMARY KEY,
    request bytea NOT NULL,
    model text,
    state text NOT NULL,
    attempt integer NOT NULL,
    accepted_wall double precision NOT NULL,
    deadline_wall double precision,
    finished_wall double precision,
    workers text NOT NULL,
    error text,
    result bytea,
    audio bytea,
    cached integer NOT NULL DEFAULT 0,
    owner text,
    epoch bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS tts_jobs_finished ON tts_jobs (finished_wall);
"""
_UPSERT = (
    "INSERT INTO tts_jobs (job_id, request, model, state, attempt, accepted_wall, deadline_wall, finished_wall,"
    " workers, error, result, audio, cached, owner, epoch) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
    " ON CONFLICT (job_id) DO UPDATE SET request=EXCLUDED.request, model=EXCLUDED.model, state=EXCLUDED.state,"
    " attempt=EXCLUDED.attempt, accepted_wall=EXCLUDED.accepted_wall, deadline_wall=EXCLUDED.deadline_wall,"
    " finished_wall=EXCLUDED.finished_wall, workers=EXCLUDED.workers, error=EXCLUDED.error,"
    " result=EXCLUDED.result, audio=EXCLUDED.audio, cached=EXCLUDED.cached, owner=EXCLUDED.owner,"
    " epoch=EXCLUDED.epoch"
)
_UPDATE = ("UPDATE tts_jobs SET state=%s, attempt=%s, finished_wall=%s, workers=%s, error=%s, result=%s, audio=%s,"
           " cached=%s, epoch=%s WHERE job_id=%s")
_SELECT = ("SELECT job_id, request, model, state, attempt, accepted_wall, deadline_wall, finished_wall, workers,"
           " error, result, audio, cached, owner FROM tts_jobs ORDER BY accepted_wall")


def create_schema(conn: Any) -> None:
    for statement in SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)


class PgJournal(PendingRows):
    """Group-committed record of jobs in PostgreSQL (see module docstring)."""

    def __init__(self, link: LeaderLink) -> None:
        super().__init__()
        self.link = link
        self.path = link.shown_url  # what status shows as "journal"
        self.commits = 0
        self.pruned_jobs = 0
        self.pruned_bytes = 0
        if link.conn is None:
            link.connect()
        link.ensure_schema(create_schema)
        self.audio_bytes = self._audio_total()

    def _session(self) -> Any:
        """The live session; after a lost one, regain it first (LeadershipLost if someone took over)."""
        link = self.link
        if link.broken():
            try:
                link.regain()
            except link.psycopg.Error as exc:
                raise JournalUnavailable(f"journal database unreachable: {_one_line(exc)}") from exc
        return link.conn

    def flush(self) -> None:
        """Write every noted job in one fenced transaction; JournalUnavailable (rows kept) if that fails."""
        if not self._new and not self._changed:
            return
        epoch = self.link.epoch
        new_rows = [(*_row(job), epoch) for job in self._new.values()]
        updates = [(*_update(job)[:-1], epoch, job.job_id) for job in self._changed.values()]
        conn = self._session()
        psycopg = self.link.psycopg
        sent_at = time.monotonic()
        try:
            with conn.transaction():
                self.link.fence()
                with conn.cursor() as cur:
                    if new_rows:
                        cur.executemany(_UPSERT, new_rows)
                    if updates:
                        cur.executemany(_UPDATE, updates)
        except LeadershipLost:
            raise
        except psycopg.Error as exc:
            raise JournalUnavailable(_one_line(exc)) from exc
        self.link.ok(sent_at)
        self._new.clear()
        self._changed.clear()
        self.commits += 1
        self.audio_bytes += sum(len(row[11]) for row in new_rows if row[11]) + \
            sum(len(row[6]) for row in updates if row[6])

    def tick(self) -> None:
        """Nothing to do: PostgreSQL needs no side file."""

    def forget_finished_before(self, wall: float, *, failed_before: Optional[float] = None) -> int:
        """Delete jobs finished before `wall`; failed ones (dead letters) only if finished before failed_before."""
        failed_wall = wall if failed_before is None else min(wall, failed_before)
        conn = self._session()
        try:
            with conn.transaction():
                self.link.fence()
                cur = conn.execute("DELETE FROM tts_jobs WHERE finished_wall IS NOT NULL AND ((state != %s AND"
                                   " finished_wall < %s) OR (state = %s AND finished_wall < %s))",
                                   (JobState.FAILED.value, wall, JobState.FAILED.value, failed_wall))
            count = cur.rowcount
            if count:
                self.audio_bytes = self._audio_total()
        except LeadershipLost:
            raise
        except self.link.psycopg.Error as exc:
            raise JournalUnavailable(_one_line(exc)) from exc
        self.link.ok()
        return int(count)

    def prune_audio(self, max_bytes: int) -> int:
        """Delete the oldest finished jobs with audio until their audio fits `max_bytes`; returns jobs deleted."""
        if self.audio_bytes <= max_bytes:
            return 0
        excess = self.audio_bytes - max_bytes
        conn = self._session()
        try:
            with conn.transaction():
                self.link.fence()
                doomed = conn.execute(
                    "WITH sized AS (SELECT job_id, octet_length(audio) AS size, SUM(octet_length(audio)) OVER"
                    " (ORDER BY finished_wall, job_id) AS running FROM tts_jobs WHERE audio IS NOT NULL AND"
                    " finished_wall IS NOT NULL) DELETE FROM tts_jobs WHERE job_id IN (SELECT job_id FROM sized"
                    " WHERE running - size < %s) RETURNING octet_length(audio)", (excess,)).fetchall()
            self.audio_bytes = self._audio_total()
        except LeadershipLost:
            raise
        except self.link.psycopg.Error as exc:
            raise JournalUnavailable(_one_line(exc)) from exc
        freed = sum(size or 0 for (size,) in doomed)
        self.pruned_jobs += len(doomed)
        self.pruned_bytes += freed
        log.info("journal: %d oldest finished jobs (%d audio bytes) pruned to keep audio under %d bytes",
                 len(doomed), freed, max_bytes)
        return len(doomed)

    def _audio_total(self) -> int:
        row = self.link.conn.execute("SELECT COALESCE(SUM(octet_length(audio)), 0) FROM tts_jobs").fetchone()
        return int(row[0])

    def restore(self, *, retain_s: float, dead_letter_s: Optional[float] = None) -> Restored:
        """Read jobs back: unfinished ones become queued again; finished ones younger than retain_s are kept."""
        rows = self.link.conn.execute(_SELECT).fetchall()
        self.link.ok()
        return read_rows(rows, retain_s=retain_s, dead_letter_s=dead_letter_s)

    def close(self) -> None:
        try:
            if self.link.active and not self.link.broken():
                self.flush()
        finally:
            self.link.close()


class PgJournalHook(JournalHook):
    """The lifecycle's journal hook (hooks.JournalHook) on the PostgreSQL journal of the leadership session."""

    def __init__(self, journal: PgJournal, *, result_ttl_s: float, max_audio_bytes: int = 0,
                 dead_letter_ttl_s: float = 0.0) -> None:
        self.journal = journal  # type: ignore[assignment]  # the same duck-typed interface as journal.Journal
        self._result_ttl_s = result_ttl_s
        self._dead_letter_ttl_s = max(dead_letter_ttl_s, result_ttl_s)
        self._max_audio_bytes = max_audio_bytes
        self._next_purge = 0.0
        self.fault: Optional[str] = None
        self.faults = 0
        self.restored_running: tuple[str, ...] = ()

    def restore(self) -> Restored:
        restored = super().restore()
        self.restored_running = restored.running  # for the takeover's adoption (adoption.py)
        return restored

    def status(self) -> dict[str, Any]:
        fields = super().status()
        fields.update(self.journal.link.status())  # type: ignore[attr-defined]
        return fields

