"""Plug-ins to the job lifecycle: the journal and the result cache, as hooks rather than `if` branches.

The lifecycle calls each hook method at a fixed point (in the spirit of dramatiq's middleware): `recorded`
whenever a job changes in a way a restart must see, `lookup` before a new job is queued, `completed` after
a worker's result, `reloaded` after RELOAD, `tick` from the timer, `commit` once per turn of the broker loop.
A hook overrides only what it needs; the lifecycle calls only what was overridden.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Callable, Optional

from tts_protocol.messages import WorkerResult

from tts_broker.jobs import Job
from tts_broker.journal import Journal, JournalUnavailable, Restored
from tts_broker.result_cache import ResultCache, cache_key
from tts_broker.workers import WorkerRecord

log = logging.getLogger(__name__)

_PURGE_EVERY_S = 10.0


@dataclasses.dataclass(frozen=True, slots=True)
class CachedAudio:
    """A stored result that can answer a new job without synthesis."""

    engine: str
    model: str
    sample_rate: int
    channels: int
    sample_format: str
    pcm: bytes


class Hook:
    """Base of lifecycle hooks; every method is a no-op until a subclass overrides it."""

    #: True when messages that promise durability (ACCEPTED, RESULT, JOB) must wait for `commit`.
    durable = False

    def restore(self) -> Optional[Restored]:
        return None

    def recorded(self, job: Job, *, new: bool) -> None:
        """`job` was accepted (new), leased, finished or reopened (new)."""

    def lookup(self, job: Job) -> Optional[CachedAudio]:
        return None

    def completed(self, job: Job, worker: WorkerRecord, body: WorkerResult) -> None:
        """A worker's result finished `job` (its audio is in job.audio)."""

    def reloaded(self, model: Optional[str]) -> None:
        """Workers serving `model` were told to load again."""

    def tick(self, now: float) -> None:
        """Called from the broker's timer, about every 50 ms."""

    def commit(self) -> None:
        """Make everything recorded since the last commit durable; raise JournalUnavailable if that failed."""

    def status(self) -> dict[str, Any]:
        """Fields for the `jobs` section of the status view."""
        return {}

    def close(self) -> None:
        pass


def overrides(hook: Hook, name: str) -> bool:
    return getattr(type(hook), name) is not getattr(Hook, name)


class JournalHook(Hook):
    """Every accepted job and its outcome in the SQLite journal, group-committed once per loop turn.

    A failed commit (disk full, a locked database) is not fatal: `commit` raises JournalUnavailable, the
    rows stay pending, `fault` says why until a later commit succeeds, and status shows it.
    """

    durable = True

    def __init__(self, path: Path, *, synchronous: str, result_ttl_s: float, max_audio_bytes: int = 0,
                 accept_loss: bool = False, dead_letter_ttl_s: float = 0.0) -> None:
        self.journal = Journal(path, synchronous=synchronous, accept_loss=accept_loss)
        self._result_ttl_s = result_ttl_s
        self._dead_letter_ttl_s = max(dead_letter_ttl_s, result_ttl_s)
        self._max_audio_bytes = max_audio_bytes
        self._next_purge = 0.0
        self.fault: Optional[str] = None
        self.faults = 0

    def restore(self) -> Restored:
        return self.journal.restore(retain_s=self._result_ttl_s, dead_letter_s=self._dead_letter_ttl_s)

    def recorded(self, job: Job, *, new: bool) -> None:
        self.journal.record(job, new=new)

    def tick(self, now: float) -> None:
        if self.fault is not None:
            return  # the server retries the commit; pruning waits until the journal writes again
        self.journal.tick()
        if now >= self._next_purge:
            self._next_purge = now + _PURGE_EVERY_S
            try:
                now_wall = time.time()
                self.journal.forget_finished_before(now_wall - self._result_ttl_s,
                                                    failed_before=now_wall - self._dead_letter_ttl_s)
                if self._max_audio_bytes:
                    self.journal.prune_audio(self._max_audio_bytes)
            except JournalUnavailable as exc:
                log.warning("journal: pruning finished jobs failed, retried later: %s", exc)

    def commit(self) -> None:
        try:
            self.journal.flush()
        except JournalUnavailable as exc:
            if self.fault is None:
                self.faults += 1
                log.error("journal commit failed, %d changes kept pending; new jobs are refused until it "
                          "writes again: %s", self.journal.pending, exc)
            self.fault = str(exc)
            raise
        if self.fault is not None:
            log.warning("journal writes again (after: %s)", self.fault)
            self.fault = None

    def status(self) -> dict[str, Any]:
        journal = self.journal
        return {"journal": str(journal.path), "journal_commits": journal.commits, "journal_fault": self.fault,
                "journal_faults": self.faults, "journal_pending": journal.pending,
                "journal_audio_bytes": journal.audio_bytes, "journal_max_audio_bytes": self._max_audio_bytes,
                "journal_pruned_jobs": journal.pruned_jobs, "journal_pruned_bytes": journal.pruned_bytes}

    def close(self) -> None:
        try:
            self.journal.close()
        except JournalUnavailable as exc:
            log.error("journal: %d changes could not be written at shutdown: %s", self.journal.pending, exc)


class CacheHook(Hook):
    """Content-addressed results: deterministic (or cache=true) jobs are answered again without synthesis."""

    def __init__(self, folder: Path, *, max_bytes: int) -> None:
        self.cache = ResultCache(folder, max_bytes=max_bytes)
        #: Whether results of this worker may be stored; under CURVE, only from keys still allowed (server.py).
        self.trusts: Callable[[WorkerRecord], bool] = lambda worker: True

    def lookup(self, job: Job) -> Optional[CachedAudio]:
        if job.request.cache is False:
            return None
        key = _key(job)
        hit = self.cache.get(key) if key else None
        if hit is None:
            return None
        meta, pcm = hit
        try:
            return CachedAudio(str(meta["engine"]), str(meta["model"]), int(meta["sample_rate"]),
                               int(meta["channels"]), str(meta["sample_format"]), pcm)
        except (KeyError, TypeError, ValueError):
            log.warning("job %s: result cache entry %s has bad metadata; ignored", job.job_id, key)
            return None

    def completed(self, job: Job, worker: WorkerRecord, body: WorkerResult) -> None:
        wanted = job.request.cache
        if not (wanted or (wanted is None and body.deterministic)):
            return
        if not self.trusts(worker):
            log.warning("job %s: result of worker %s not cached: its key is no longer allowed", job.job_id,
                        worker.worker_id)
            return
        key = _key(job)
        if key:
            meta = {"engine": worker.ready.engine, "model": worker.ready.model, "sample_rate": body.sample_rate,
                    "channels": body.channels, "sample_format": body.sample_format}
            self.cache.put(key, meta, job.audio_data())

    def reloaded(self, model: Optional[str]) -> None:
        self.cache.clear()  # entries came from the old checkpoint

    def status(self) -> dict[str, Any]:
        return {"cache": self.cache.stats()}


def _key(job: Job) -> Optional[str]:
    req = job.request
    return cache_key(req.text, req.speaker, req.voice, job.model)
