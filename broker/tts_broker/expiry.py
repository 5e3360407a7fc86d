"""Transitions driven by the clock: dead workers, job deadlines, attempt time limits, unroutable jobs.

Functions of a Lifecycle, kept apart from the message-driven transitions in lifecycle.py; the broker's timer
calls `tick` about every 50 ms.
"""

from __future__ import annotations

import heapq
import logging
from typing import TYPE_CHECKING

from tts_protocol import ErrorCode
from tts_protocol.constants import JobState

if TYPE_CHECKING:
    from tts_broker.lifecycle import Lifecycle

log = logging.getLogger(__name__)


def tick(life: Lifecycle, now: float) -> None:
    settings = life.settings
    dead_after = settings.heartbeat_interval_s * settings.heartbeat_liveness
    for worker in life.workers:
        if now - worker.last_seen > dead_after:
            log.warning("worker %s silent for %.1fs: declared dead (%d leases)", worker.worker_id,
                        now - worker.last_seen, len(worker.leases))
            life.worker_gone(worker, "died")
    expire_deadlines(life, now)
    expire_leases(life, now)
    if settings.unroutable_timeout_s > 0:
        fail_unroutable(life, now)
    life.jobs.expire(now)


def expire_deadlines(life: Lifecycle, now: float) -> None:
    """End jobs whose whole-job deadline passed (entries of reopened jobs' old deadlines are skipped)."""
    heap = life.deadlines
    while heap and heap[0][0] <= now:
        _, job_id = heapq.heappop(heap)
        job = life.jobs.get(job_id)
        if job is not None and not job.state.finished and job.deadline is not None and job.deadline <= now:
            life.fail(job, ErrorCode.DEADLINE_EXCEEDED,
                      f"deadline of {job.request.deadline_ms} ms passed (attempt {job.attempt})",
                      cancel_reason="deadline")


def expire_leases(life: Lifecycle, now: float) -> None:
    """Cancel attempts that ran past their time limit and queue their jobs again."""
    heap = life.lease_deadlines
    while heap and heap[0][0] <= now:
        _, job_id, attempt = heapq.heappop(heap)
        job = life.jobs.get(job_id)
        if job is None or job.state is not JobState.RUNNING or job.attempt != attempt:
            continue
        life.revoke(job, "attempt timed out")
        life.requeue(job, f"attempt {attempt} ran past its time limit on worker {job.worker_id}")


def fail_unroutable(life: Lifecycle, now: float) -> None:
    """Fail queued jobs whose routing key no connected worker has served for unroutable_timeout_s."""
    since_by_key = life.unroutable_since
    for key in life.queue.keys():
        if key in life.paused or life.workers.serves_key(key):
            since_by_key.pop(key, None)
            continue
        since = since_by_key.setdefault(key, now)
        if now - since >= life.settings.unroutable_timeout_s:
            for job in list(life.queue.jobs_for_key(key)):
                life.fail(job, ErrorCode.NO_WORKERS, f"no connected worker serves model {key!r}")
            since_by_key.pop(key, None)
