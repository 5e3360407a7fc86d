"""Plug-ins to the broker core: the journal, the result cache, metrics, reloads, as hooks, not `if` branches.

The core (core.py) reports events through one `Hooks.emit` (in the spirit of dramatiq's middleware):
`recorded` whenever a job changes in a way a restart must see, `completed` after a worker's result,
`worker_ready` when a worker registers, `reloaded` after RELOAD, `tick` from the timer. A hook overrides only
what it needs; `emit` calls only what was overridden, and a hook that raises is logged and skipped, so the
next hook still runs. The list is fixed when the core is built.

I/O is never done inside a transition. The server performs it between turns: `lookup` (the result cache
reading a stored answer for a job the core set aside), `commit` once per turn of the loop (the journal's group
commit, the cache's writes), `restore` at start-up and `close` at the end.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

from tts_protocol.messages import Ready, WorkerResult

from tts_broker.jobs import Job
from tts_broker.journal import Journal, JournalUnavailable, Restored
from tts_broker.result_cache import ResultCache, cache_key, made_by, producer
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
        """A stored answer for a new job (I/O: called by the server, outside transitions)."""
        return None

    def may_answer(self, job: Job) -> bool:
        """Whether `lookup` might answer `job`, from memory alone: the core sets such jobs aside for it."""
        return False

    def completed(self, job: Job, worker: WorkerRecord, body: WorkerResult) -> None:
        """A worker's result finished `job` (its audio is in job.audio)."""

    def worker_ready(self, ready: Ready) -> None:
        """A worker registered (READY)."""

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


EVENTS = ("recorded", "completed", "worker_ready", "reloaded", "tick")


class Hooks:
    """The core's hooks, fixed at construction, and `emit`, the one way events reach them."""

    def __init__(self, hooks: Sequence[Hook]) -> None:
        self.all: tuple[Hook, ...] = tuple(hooks)
        self.durable = any(h.durable for h in self.all)
        self._calls: dict[str, tuple[Callable[..., Any], ...]] = {
            event: tuple(getattr(h, event) for h in self.all if overrides(h, event)) for event in EVENTS
        }
        self._lookups = tuple(h for h in self.all if overrides(h, "lookup"))
        self._committers = tuple(h.commit for h in self.all if overrides(h, "commit"))

    def __iter__(self) -> Iterator[Hook]:
        return iter(self.all)

    def emit(self, event: str, *args: Any, **kwargs: Any) -> None:
        """Call `event` on every hook that has it; one that raises is logged and the next still runs."""
        for call in self._calls[event]:
            try:
                call(*args, **kwargs)
            except Exception:
                log.exception("hook %s failed on %s; the other hooks still run",
                              type(getattr(call, "__self__", call)).__name__, event)

    def may_answer(self, job: Job) -> bool:
        return any(h.may_answer(job) for h in self._lookups)

    def lookup(self, job: Job) -> Optional[CachedAudio]:
        """The first stored answer a hook has for `job` (I/O; the server calls it between turns)."""
        for hook in self._lookups:
            try:
                hit = hook.lookup(job)
            except Exception:
                log.exception("job %s: hook %s failed on lookup; treated as a miss", job.job_id, type(hook).__name__)
                continue
            if hit is not None and hit.channels >= 1:
                return hit
        return None

    @property
    def committing(self) -> bool:
        return bool(self._committers)

    def commit(self) -> None:
        """Every hook's commit, in order; JournalUnavailable propagates (the server keeps the rows pending)."""
        for commit in self._committers:
            commit()

    def status(self) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        for hook in self.all:
            try:
                fields.update(hook.status())
            except Exception:
                log.exception("hook %s failed on status", type(hook).__name__)
        return fields

    def close(self) -> None:
        for hook in self.all:
            try:
                hook.close()
            except Exception:
                log.exception("hook %s failed on close", type(hook).__name__)


class JournalHook(Hook):
    """Every accepted job and its outcome in the SQLite journal, group-committed once per loop turn.

    A failed commit (disk full, a locked database) is not fatal: `commit` raises JournalUnavailable, the
    rows stay pending, `fault` says why until a later commit succeeds, and status shows it.
    """

    durable = True

    def __init__(self, path: Path, *, synchronous: str, result_ttl_s: float, max_audio_bytes: int = 0,
                 accept_loss: bool = False, dead_letter_ttl_s: float = 0.0,
                 lock_file: Optional[Path] = None) -> None:
        self.journal = Journal(path, synchronous=synchronous, accept_loss=accept_loss, lock_file=lock_file)
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
    """Content-addressed results: deterministic (or cache=true) jobs are answered again without synthesis.

    The disk is touched only in `lookup` and `commit`, which the server calls between turns: `completed`
    queues the entry, RELOAD forgets that model's entries from the index at once and deletes their files at
    the next commit.

    Under CURVE a hit is scoped to the submitting key (result_cache.py); keys named in `shared_keys` (or
    every key, with "*") share one scope: an opt-in for keys that trust each other.
    """

    def __init__(self, folder: Path, *, max_bytes: int, shared_keys: frozenset[str] = frozenset()) -> None:
        self.cache = ResultCache(folder, max_bytes=max_bytes)
        self.shared_keys = shared_keys
        #: Whether results of this worker may be stored; under CURVE, only from keys still allowed (server.py).
        self.trusts: Callable[[WorkerRecord], bool] = lambda worker: True
        self._writes: list[tuple[str, dict[str, Any], Job]] = []
        self._clear = False
        self._stale: list[str] = []  # entries forgotten by a RELOAD whose files are deleted at the next commit

    def may_answer(self, job: Job) -> bool:
        if job.request.cache is False:
            return False
        key = self._key(job)
        return key is not None and self.cache.has(key)

    def lookup(self, job: Job) -> Optional[CachedAudio]:
        if job.request.cache is False:
            return None
        key = self._key(job)
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
        key = self._key(job)
        if key:
            meta = {"engine": worker.ready.engine, "model": worker.ready.model, "sample_rate": body.sample_rate,
                    "channels": body.channels, "sample_format": body.sample_format}
            self._writes.append((key, meta, job))

    def reloaded(self, model: Optional[str]) -> None:
        # Entries of that model came from the old checkpoint; other models' entries stay.
        self._writes = [w for w in self._writes if not made_by(producer(w[1]), model)]
        if model is None:
            self.cache.forget()
            self._stale.clear()
            self._clear = True
        else:
            self._stale += self.cache.forget(model)
        log.info("result cache: reload of %s forgets its entries", model or "every model")

    def commit(self) -> None:
        if self._clear:
            self._clear = False
            self.cache.clear()
        stale, self._stale = self._stale, []
        self.cache.remove_files(stale)
        writes, self._writes = self._writes, []
        for key, meta, job in writes:
            self.cache.put(key, meta, job.audio_data())

    def status(self) -> dict[str, Any]:
        return {"cache": self.cache.stats()}

    def close(self) -> None:
        self.commit()

    def scope(self, owner: Optional[str]) -> Optional[str]:
        """Who may hit an entry made for `owner`: None without CURVE, else the key or the shared scope."""
        if owner is None:
            return None
        if "*" in self.shared_keys or owner in self.shared_keys:
            return "shared"
        return f"key:{owner}"

    def _key(self, job: Job) -> Optional[str]:
        req = job.request
        return cache_key(req.text, req.speaker, req.voice, job.model, self.scope(job.owner))
