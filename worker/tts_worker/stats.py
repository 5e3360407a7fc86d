"""Worker figures for HEARTBEAT stats (PROTOCOL.md section 4) and for the max_jobs / max_rss_mb checks.

The stats map always packs: the worker's own figures are numbers, strings and a list of str (`warm`);
whatever the engine reports is cleaned into msgpack-safe scalars, lists and maps under `engine`.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from typing import Any, Mapping, Optional

import psutil

log = logging.getLogger(__name__)

MAX_WARM = 256
_MAX_DEPTH = 3
_MAX_ITEMS = 64
_MAX_KEY_CHARS = 256
_MAX_STR_CHARS = 1024
_INT_RANGE = (-(2**63), 2**64 - 1)  # what msgpack can carry


class WorkerStats:
    """Counters kept by the I/O thread (single-threaded use)."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.jobs_done = 0
        self.jobs_failed = 0
        self.load_time_ms = 0
        self.reload_error: Optional[str] = None
        self._gen_ms_total = 0
        self._process = psutil.Process()
        self._process.cpu_percent()  # the first call starts the measurement; heartbeats read the rest

    @property
    def jobs_answered(self) -> int:
        return self.jobs_done + self.jobs_failed

    @property
    def mean_gen_ms(self) -> float:
        return round(self._gen_ms_total / self.jobs_done, 1) if self.jobs_done else 0.0

    def record_done(self, gen_ms: int) -> None:
        self.jobs_done += 1
        self._gen_ms_total += gen_ms

    def record_failed(self) -> None:
        self.jobs_failed += 1

    def rss_bytes(self) -> int:
        try:
            return int(self._process.memory_info().rss)
        except psutil.Error:
            return 0

    def cpu_percent(self) -> float:
        """CPU use of this process since the previous heartbeat (100 = one core busy)."""
        try:
            return float(self._process.cpu_percent())
        except psutil.Error:
            return 0.0

    def heartbeat(self, *, busy: int, engine_stats: Any) -> dict[str, Any]:
        """The HEARTBEAT `stats` map; engine figures go under `engine`, its `warm` list to the top."""
        if isinstance(engine_stats, Mapping):
            engine = dict(engine_stats)
        else:
            engine = {"stats_error": f"engine stats are a {type(engine_stats).__name__}, not a map"}
        warm = engine.pop("warm", None)
        stats: dict[str, Any] = {
            "jobs_done": self.jobs_done,
            "jobs_failed": self.jobs_failed,
            "mean_gen_ms": float(self.mean_gen_ms),
            "rss_bytes": self.rss_bytes(),
            "cpu_percent": self.cpu_percent(),
            "load_time_ms": self.load_time_ms,
            "busy": busy,
            "uptime_s": round(time.monotonic() - self.started, 3),
            "warm": warm_list(warm),
            "engine": _plain(engine),
        }
        gpu = gpu_mem_bytes()
        if gpu is not None:
            stats["gpu_mem_bytes"] = gpu
        if self.reload_error:
            stats["reload_error"] = self.reload_error
        return stats


def gpu_mem_bytes() -> Optional[int]:
    """CUDA memory held by torch, only if the engine already imported torch and initialised CUDA."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            return int(torch.cuda.memory_reserved())
    except Exception:  # a broken CUDA setup must not stop heartbeats
        return None
    return None


def warm_list(warm: Any) -> list[str]:
    """The engine's warm speakers as at most MAX_WARM names; anything but a list, tuple or set means none."""
    if not isinstance(warm, (list, tuple, set, frozenset)):
        return []
    return [str(name)[:_MAX_KEY_CHARS] for name in list(warm)[:MAX_WARM]]


def _plain(value: Any, depth: int = 0) -> Any:
    """Make engine stats msgpack-safe: str keys, scalars, lists and maps; anything else becomes str."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value) if _INT_RANGE[0] <= value <= _INT_RANGE[1] else str(value)[:_MAX_STR_CHARS]
    if isinstance(value, str):
        return value[:_MAX_STR_CHARS]
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if depth >= _MAX_DEPTH:
        return str(value)[:_MAX_STR_CHARS]
    if isinstance(value, Mapping):
        return {str(k)[:_MAX_KEY_CHARS]: _plain(v, depth + 1) for k, v in list(value.items())[:_MAX_ITEMS]}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v, depth + 1) for v in list(value)[:MAX_WARM]]
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        try:
            return _plain(item(), depth + 1)
        except Exception:
            pass
    return str(value)[:_MAX_STR_CHARS]
