"""The engine side of a worker: the loaded engine, its synthesis threads, and swapping both on a reload.

The daemon's I/O thread owns this object. A reload builds and loads a second engine in the same process
while the first is still loaded; only when that succeeds are the old synthesis threads stopped and the old
engine closed, so a bad RELOAD leaves the worker serving exactly as before.
"""

from __future__ import annotations

import logging
import queue
from typing import Any, Callable, Mapping, Optional

from tts_worker.engines.base import Engine, EngineInfo
from tts_worker.engines.registry import LoadedEngine, close_engine, load_engine
from tts_worker.settings import WorkerSettings
from tts_worker.synthesis import Event, SynthesisRunner, Task

log = logging.getLogger(__name__)

RELOAD_STOP_S = 5.0
_MAX_STATS_ERROR = 200


class EngineHost:
    """One loaded engine and the SynthesisRunner feeding it (see module docstring)."""

    def __init__(self, settings: WorkerSettings, options: Mapping[str, Any], notify: Callable[[], None]) -> None:
        self.settings = settings
        self.options: dict[str, Any] = dict(options)
        self._notify = notify
        self._loaded: Optional[LoadedEngine] = None
        self._runner: Optional[SynthesisRunner] = None

    def load(self) -> LoadedEngine:
        """Load the configured engine and start its threads; EngineLoadError propagates."""
        self._start(load_engine(self.settings.engine, self.options, self.settings))
        return self._current()

    def reload(self, options: Mapping[str, Any]) -> LoadedEngine:
        """Load the engine with new options and swap it in; on EngineLoadError the current one stays."""
        loaded = load_engine(self.settings.engine, options, self.settings)
        old = self._current()
        assert self._runner is not None
        if not self._runner.stop(timeout_s=RELOAD_STOP_S):
            log.warning("reload: a synthesis thread of the old engine is still busy")
        self.options = dict(options)
        self._start(loaded)
        close_engine(old.engine)
        return loaded

    def merged_options(self, changes: Mapping[str, Any], *, base: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
        """`base` (default: the current options) with a RELOAD's changes applied; None removes an option."""
        merged = dict(self.options if base is None else base)
        for key, value in changes.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        return merged

    def close(self, *, timeout_s: float = 1.0) -> bool:
        """Stop the synthesis threads and close the engine; False if a thread was still busy."""
        stopped = self._runner.stop(timeout_s=timeout_s) if self._runner is not None else True
        if self._loaded is not None:
            close_engine(self._loaded.engine)
        return stopped

    @property
    def engine(self) -> Engine:
        return self._current().engine

    @property
    def info(self) -> EngineInfo:
        return self._current().info

    @property
    def events(self) -> "queue.Queue[Event]":
        """What the synthesis threads report, in order (Chunk, Done, Failed)."""
        assert self._runner is not None, "engine not loaded"
        return self._runner.events

    def submit(self, task: Task) -> None:
        assert self._runner is not None, "engine not loaded"
        self._runner.submit(task)

    def capacity_now(self) -> Optional[int]:
        """The capacity an adaptive engine asks for now (its `capacity_now()`), or None for a fixed one.

        Bounded by the engine's thread count (EngineInfo.capacity); 0 = take no new job for now.
        """
        ask = getattr(self.engine, "capacity_now", None)
        if ask is None:
            return None
        try:
            value = int(ask())
        except Exception as exc:  # an engine bug: keep the last advertised capacity
            log.warning("engine capacity_now() failed: %s", exc)
            return None
        return min(max(0, value), max(1, self.info.capacity))

    def warm_generation(self) -> Optional[int]:
        """A counter an engine bumps when its warm speakers change (optional `warm_generation`), else None."""
        value = getattr(self.engine, "warm_generation", None)
        return value if isinstance(value, int) else None

    def stats(self) -> Any:
        """The engine's own heartbeat figures, best effort: a failing stats() becomes a `stats_error` entry."""
        try:
            return self.engine.stats()
        except Exception as exc:  # stats are best effort
            return {"stats_error": f"{type(exc).__name__}: {exc}"[:_MAX_STATS_ERROR]}

    def _start(self, loaded: LoadedEngine) -> None:
        self._loaded = loaded
        self._runner = SynthesisRunner(loaded.engine, loaded.info, self._notify)

    def _current(self) -> LoadedEngine:
        assert self._loaded is not None, "engine not loaded"
        return self._loaded
