"""Bounds on the status view: a byte budget per worker's stats, pages of workers, a fleet summary.

A worker's heartbeat `stats` may carry 10,000 values within the protocol's limits (megabytes); three such
workers made BROKER_STATUS larger than the 4 MiB a client accepts, and `tts status`, `tts health`, the
gateway and the autoscaler all failed. So what one worker adds to a view is cut to `WORKER_STATS_BUDGET`
bytes (msgpack) with a marker saying so, and one reply carries at most `REPLY_WORKERS_BUDGET` bytes of
workers: a reader pages (`workers_offset`, `workers_limit`) or reads `summary`, whose size does not grow
with the fleet (the gateway and `tts health` read only that).
"""

from __future__ import annotations

import collections
from typing import Any, Iterable, Optional

import msgpack

from tts_protocol import routing
from tts_protocol.messages import StatusRequest, WorkerView

#: What one worker's free-form stats (warm speakers, engine_stats, supervisor) may add to a view, in bytes.
WORKER_STATS_BUDGET = 4096
#: Bytes of worker views in one BROKER_STATUS reply (clients accept 4 MiB bodies).
REPLY_WORKERS_BUDGET = 2 * 1024 * 1024
#: Routing keys listed in the summary's by_key.
SUMMARY_MAX_KEYS = 256
#: The key a cut map gets: {"bytes": size of what the worker sent, "kept": entries kept, "dropped": ...}.
TRUNCATED = "_truncated"


def _size(value: Any) -> int:
    return len(msgpack.packb(value, use_bin_type=True))


def _bounded_map(value: Any, budget: int) -> dict[str, Any]:
    """`value` (a heartbeat map) if it fits `budget` bytes, else its leading entries that fit and a marker."""
    if not isinstance(value, dict):
        return {}
    total = _size(value)
    if total <= budget:
        return value
    kept: dict[str, Any] = {}
    used = 64  # room for the marker
    for key, item in value.items():
        cost = _size(key) + _size(item)
        if used + cost > budget:
            continue
        kept[key] = item
        used += cost
    kept[TRUNCATED] = {"bytes": total, "kept": len(kept), "dropped": len(value) - len(kept)}
    return kept


def bounded_stats(stats: dict[str, Any]) -> tuple[list[str], dict[str, Any], dict[str, Any]]:
    """(warm, engine_stats, supervisor) of a heartbeat, together within WORKER_STATS_BUDGET bytes.

    The supervisor map is small and the autoscaler reads it, so it goes first (a quarter of the budget);
    warm speakers (sorted, names cut to 64 characters) take up to a quarter; engine_stats the rest.
    """
    supervisor = _bounded_map(stats.get("supervisor"), WORKER_STATS_BUDGET // 4)
    warm: list[str] = []
    raw_warm = stats.get("warm")
    if isinstance(raw_warm, list):
        used = 0
        for name in sorted(str(n)[:64] for n in raw_warm[:256]):
            used += len(name.encode()) + 2
            if used > WORKER_STATS_BUDGET // 4:
                break
            warm.append(name)
    left = WORKER_STATS_BUDGET - _size(supervisor) - _size(warm)
    engine_stats = _bounded_map(stats.get("engine"), left)
    return warm, engine_stats, supervisor


def fleet_summary(views: Iterable[WorkerView]) -> dict[str, Any]:
    """Counts over every worker, and per routing key (ENGINE and ENGINE:MODEL), in a bounded size."""
    totals = {"workers": 0, "capacity": 0, "busy": 0, "idle_slots": 0, "draining": 0}
    by_key: dict[str, collections.Counter[str]] = {}
    for view in views:
        totals["workers"] += 1
        totals["capacity"] += view.capacity
        totals["busy"] += view.busy
        totals["draining"] += view.state == "draining"
        if view.state != "draining":
            totals["idle_slots"] += max(0, view.capacity - view.busy)
        for key in routing.served_keys(view.engine, view.model):
            if key is None:
                continue
            counter = by_key.get(key)
            if counter is None:
                counter = by_key[key] = collections.Counter()
            counter["workers"] += 1
            counter["capacity"] += view.capacity
            counter["busy"] += view.busy
    ranked = sorted(by_key, key=lambda k: (-by_key[k]["workers"], k))
    summary: dict[str, Any] = dict(totals)
    summary["by_key"] = {k: dict(by_key[k]) for k in ranked[:SUMMARY_MAX_KEYS]}
    summary["keys_omitted"] = max(0, len(ranked) - SUMMARY_MAX_KEYS)
    return summary


def page(views: list[WorkerView], req: Optional[StatusRequest]) -> tuple[list[WorkerView], int]:
    """The page of `views` the request asks for, cut to REPLY_WORKERS_BUDGET bytes; (page, offset)."""
    offset = req.workers_offset if req is not None else 0
    limit = req.workers_limit if req is not None else None
    if req is not None and req.worker_prefix:
        views = [v for v in views if v.name.startswith(req.worker_prefix)]
    chosen: list[WorkerView] = []
    used = 0
    for view in views[offset:]:
        if limit is not None and len(chosen) >= limit:
            break
        used += _size(view.model_dump(mode="json"))
        if used > REPLY_WORKERS_BUDGET and chosen:
            break
        chosen.append(view)
    return chosen, offset
