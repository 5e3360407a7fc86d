"""`tts bridge bullmq`: a BullMQ worker (the Python `bullmq` package shares its Lua scripts with Node's, so
a Node backend's `queue.add` lands here) that runs each job through the broker.

Our job id is the BullMQ job id (with an optional prefix), so a job BullMQ hands out again (its lock expired
because a bridge died, or a retry) attaches to the broker's job instead of synthesising it again. Progress:
50 once the broker holds the job (ACCEPTED), 100 done (each update is a Redis round trip, so no more).

A malformed message or a non-retryable broker error fails the job with UnrecoverableError (no retries; BullMQ's
failed set, failedReason says why); anything that passes (broker away, retryable error) is an ordinary error
that BullMQ retries per the job's `attempts`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Optional

from bullmq import Queue, UnrecoverableError, Worker

from tts_bridge.errors import JobDeferred, JobRejected, MalformedJob
from tts_bridge.message import job_id_from, parse_job
from tts_bridge.runner import JobRunner
from tts_bridge.settings import BridgeSettings
from tts_bridge.stats import BridgeStats

log = logging.getLogger(__name__)


class BullMQBridge:
    """One BullMQ Worker on a queue, concurrency = the bridge's max_in_flight."""

    name = "bullmq"

    def __init__(self, runner: JobRunner, settings: BridgeSettings, stats: BridgeStats, *, redis_url: str,
                 queue: str, prefix: str = "bull", job_id_prefix: str = "") -> None:
        self.runner = runner
        self.settings = settings
        self.stats = stats
        self.redis_url = redis_url
        self.queue_name = queue
        self.prefix = prefix
        self.job_id_prefix = job_id_prefix
        self._stopping = asyncio.Event()
        self._background: set[asyncio.Task[Any]] = set()

    async def run(self) -> None:
        lock_ms = max(1000, int(self.settings.dead_after_s * 1000))
        worker = Worker(self.queue_name, self._process, {
            "connection": self.redis_url,
            "prefix": self.prefix,
            "concurrency": self.settings.max_in_flight,
            # A dead bridge's active jobs go back to wait once their lock lapses (dead_after_s) and are handed
            # out again; several stalls in a row (a bridge killed repeatedly) must not fail a healthy job.
            "lockDuration": lock_ms,
            "stalledInterval": max(500, lock_ms // 2),
            "maxStalledCount": 10,
            "runRetryDelay": 1000,  # Redis away: poll again every second, not every 15 s
            "autorun": False,
        })
        worker.on("error", lambda err, *_: log.warning("bullmq: %s", err))
        queue = Queue(self.queue_name, {"connection": self.redis_url, "prefix": self.prefix})
        runner = asyncio.ensure_future(worker.run())
        lag = asyncio.ensure_future(self._measure_lag(queue))
        try:
            await asyncio.wait([runner, asyncio.ensure_future(self._stopping.wait())],
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            lag.cancel()
            await worker.close()
            await asyncio.gather(runner, lag, return_exceptions=True)
            await queue.close()

    def stop(self) -> None:
        self._stopping.set()

    async def aclose(self) -> None:
        self.stop()

    async def _measure_lag(self, queue: Queue) -> None:
        while True:
            try:
                counts = await queue.getJobCounts("wait", "prioritized", "delayed")
                self.stats.set_lag(sum(int(v) for v in counts.values()))
            except Exception as exc:  # Redis away: the worker reports it; the gauge keeps its last value
                log.debug("bullmq: job counts unavailable: %s", exc)
            await asyncio.sleep(1.0)

    async def _process(self, job: Any, _token: Optional[str] = None) -> dict[str, Any]:
        self.stats.on_consumed()
        self.stats.start_job()
        try:
            return await self._run(job)
        finally:
            self.stats.end_job()

    async def _run(self, job: Any) -> dict[str, Any]:
        job_id = job_id_from(self.job_id_prefix + str(job.id))
        data = job.data
        try:
            if not isinstance(data, dict):
                raise MalformedJob(f"job data is not a JSON object (a JSON {type(data).__name__})")
            message = parse_job(data, default_id=str(job.id), job_id=job_id,
                                max_text_chars=self.settings.max_text_chars, tenant_field=self.settings.tenant_field)

            progress: list[asyncio.Task[Any]] = []

            def accepted() -> None:
                self.stats.on_acked()
                progress.append(self._spawn(job.updateProgress(50)))

            result = await self.runner.run(message, accepted)
            await asyncio.gather(*progress, return_exceptions=True)  # 50 must not land after 100
        except (MalformedJob, JobRejected) as exc:
            log.warning("job %s (bullmq %s): failed: %s", job_id, job.id, exc)
            self.stats.on_failed()
            raise UnrecoverableError(str(exc)) from exc
        except JobDeferred as exc:
            log.warning("job %s (bullmq %s): %s; BullMQ retries it", job_id, job.id, exc)
            raise
        await job.updateProgress(100)
        self.stats.on_answered()
        return result

    def _spawn(self, coro: Any) -> "asyncio.Task[Any]":
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_log_failure)
        return task


def _log_failure(task: "asyncio.Task[Any]") -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("bullmq: progress update failed: %s", task.exception())
