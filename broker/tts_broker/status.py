"""What BROKER_STATUS, the metrics snapshot and the dashboard report: the broker's state as a StatusView."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Protocol

from tts_protocol.messages import StatusView, WorkerView

from tts_broker.hooks import Hooks
from tts_broker.jobs import JobTable
from tts_broker.queue import JobQueue
from tts_broker.settings import BrokerSettings
from tts_broker.workers import WorkerRecord, WorkerRegistry


@dataclasses.dataclass(frozen=True, slots=True)
class BrokerInfo:
    """Who this broker is, for PONG and the status view."""

    broker_id: str
    version: str
    started_at: float  # monotonic


class BrokerState(Protocol):
    """The parts of the core a status view reads (core.BrokerCore has them)."""

    settings: BrokerSettings
    jobs: JobTable
    queue: JobQueue
    workers: WorkerRegistry
    hooks: Hooks
    journal_fault: Optional[str]

    @property
    def draining(self) -> bool: ...

    @property
    def paused(self) -> set[str]: ...


def public_worker_view(view: WorkerView) -> WorkerView:
    """A worker as non-admin keys see it: no routing id, host, process id or name."""
    alias = f"{view.engine}-{abs(hash(view.worker_id)) % 10**8:08d}"
    return view.model_copy(update={"worker_id": alias, "name": alias, "host": "", "pid": 0})


def status_view(state: BrokerState, info: BrokerInfo, now: float,
                workers: Optional[list[WorkerRecord]] = None) -> StatusView:
    """The broker's state as BROKER_STATUS reports it (PROTOCOL.md section 6)."""
    jobs, settings = state.jobs, state.settings
    connected = list(state.workers) if workers is None else workers
    running = sum(len(w.held_jobs()) for w in connected)
    job_fields: dict[str, Any] = {
        "running": running, "live": jobs.live_count, "done": jobs.done_total, "failed": jobs.failed_total,
        "retained": jobs.retained_count, "retained_bytes": jobs.retained_bytes,
        "retained_max_bytes": settings.max_retained_bytes, "retained_dropped": jobs.evicted,
        "retained_dropped_bytes": jobs.evicted_bytes,
        "journal": None, "journal_commits": 0, "journal_fault": None, "cache": None,
    }
    job_fields.update(state.hooks.status())
    return StatusView(
        broker_id=info.broker_id,
        version=info.version,
        uptime_s=round(now - info.started_at, 3),
        draining=state.draining,
        default_model=settings.default_model,
        queue={"depth": len(state.queue), "max": settings.max_queue,
               "by_priority": state.queue.depth_by_priority()},
        jobs=job_fields,
        workers=[w.view(now) for w in connected],
        paused=sorted(state.paused),
    )
