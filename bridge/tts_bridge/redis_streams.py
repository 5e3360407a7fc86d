"""`tts bridge redis-streams`: jobs from a Redis stream (consumer group), results to a result stream.

Delivery: XREADGROUP hands an entry to this consumer; once the broker holds the job (ACCEPTED, journaled) the
entry is recorded in the in-flight hash and XACKed in one transaction; the answer (result-stream entry) and
the removal of the in-flight record are one transaction too. So an entry is at every moment either pending
in the group, or in the in-flight hash, or answered. A bridge that dies leaves pending entries (XAUTOCLAIMed by
another bridge once idle) and in-flight records (taken over once the dead bridge's heartbeat key expired);
both are resubmitted under the same job id, which the broker answers from the job it has: nothing is
synthesised twice and each entry is answered once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import socket
from typing import Any, Awaitable, Callable, Optional, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tts_bridge.errors import BridgeStopped, JobDeferred, JobRejected, MalformedJob
from tts_bridge.message import JobMessage, from_stream_fields, job_id_from, parse_job
from tts_bridge.runner import JobRunner
from tts_bridge.settings import BridgeSettings
from tts_bridge.stats import BridgeStats

log = logging.getLogger(__name__)

T = TypeVar("T")

_RETRY_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)
_BACKOFF_S = (0.1, 0.2, 0.5, 1.0, 2.0)
_DEFERRED_RETRY_S = 2.0
# Compare-and-set of an in-flight record: take it over only if it still names the dead bridge.
_TAKE_OVER = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return 1
end
return 0
"""
# The answer, at most once: a transaction whose reply was lost when Redis went away is run again, so it first
# checks that the entry is still unanswered (pending in the group, or held in the in-flight hash).
_ANSWER = """
local stream, inflight, results, dead = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local group, entry_id, job_id = ARGV[1], ARGV[2], ARGV[3]
local pending = redis.call('XPENDING', stream, group, entry_id, entry_id, 1)
if #pending == 0 and redis.call('HEXISTS', inflight, job_id) == 0 then
  return 0
end
redis.call('XADD', results, '*', unpack(cjson.decode(ARGV[4])))
if ARGV[5] ~= '' then
  redis.call('XADD', dead, '*', unpack(cjson.decode(ARGV[5])))
end
redis.call('HDEL', inflight, job_id)
redis.call('XACK', stream, group, entry_id)
return 1
"""


def consumer_name() -> str:
    """host-pid-random: unique per process, so a restarted bridge is a new consumer."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class RedisStreamsBridge:
    """One consumer of a stream's consumer group, feeding the broker."""

    name = "redis-streams"

    def __init__(self, runner: JobRunner, settings: BridgeSettings, stats: BridgeStats, *, redis_url: str,
                 stream: str, group: str, results: str, dead: Optional[str] = None,
                 consumer: Optional[str] = None) -> None:
        self.runner = runner
        self.settings = settings
        self.stats = stats
        self.redis = aioredis.Redis.from_url(redis_url, decode_responses=True, socket_connect_timeout=2,
                                             health_check_interval=5)
        self.stream = stream
        self.group = group
        self.results = results
        self.dead = dead or f"{stream}:dead"
        self.inflight = f"{stream}:inflight"
        self.consumer = consumer or consumer_name()
        self._heartbeat_key = self._heartbeat(self.consumer)
        self._running: dict[str, asyncio.Task[None]] = {}
        self._slot_free = asyncio.Event()
        self._stopping = asyncio.Event()
        self._background: set[asyncio.Task[Any]] = set()

    def _heartbeat(self, consumer: str) -> str:
        return f"{self.stream}:bridge:{consumer}"

    # ---- the loop ----------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Consume until stop(); Redis going away is waited out, never fatal."""
        try:
            await self._consume()
        except BridgeStopped as exc:
            log.warning("redis-streams: %s; unanswered entries stay pending for another bridge", exc)

    async def _consume(self) -> None:
        await self._retrying(self._ensure_group)
        await self._retrying(self._beat)
        self._spawn(self._every(self.settings.dead_after_s / 3, self._beat))
        self._spawn(self._every(max(0.5, self.settings.dead_after_s / 2), self._reclaim, first=True))
        self._spawn(self._every(1.0, self._measure_lag))
        while not self._stopping.is_set():
            free = self.settings.max_in_flight - len(self._running)
            if free <= 0:
                self._slot_free.clear()
                await self._wait_any(self._slot_free)
                continue
            try:
                reply = await self.redis.xreadgroup(self.group, self.consumer, {self.stream: ">"}, count=free,
                                                    block=1000)
            except _RETRY_ERRORS as exc:
                log.warning("redis-streams: reading %s failed (%s); retrying", self.stream, exc)
                await self._pause(1.0)
                continue
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                await self._retrying(self._ensure_group)  # the server lost the group (restarted without data)
                continue
            streams: Any = reply or []
            for _stream, entries in streams:
                for entry_id, fields in entries:
                    self._take(entry_id, fields)
        await self._drain()

    def stop(self) -> None:
        self._stopping.set()

    async def aclose(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        try:
            await self.redis.delete(self._heartbeat_key)
        except _RETRY_ERRORS + (ResponseError,):
            pass
        await self.redis.aclose()

    async def _drain(self) -> None:
        """Let the running jobs finish (their entries stay pending or in-flight if they do not)."""
        if self._running:
            await asyncio.wait(list(self._running.values()), timeout=30)

    # ---- one entry ---------------------------------------------------------------------------------------

    def _take(self, entry_id: str, fields: dict[str, str], *, acked: bool = False) -> None:
        job_id = job_id_from(self.stream, entry_id)
        if job_id in self._running:
            return
        self.stats.on_consumed()
        try:
            job = parse_job(from_stream_fields(fields), default_id=entry_id, job_id=job_id,
                            max_text_chars=self.settings.max_text_chars, tenant_field=self.settings.tenant_field)
        except MalformedJob as exc:
            self._running[job_id] = self._spawn(self._reject(entry_id, job_id, fields, str(exc)))
            return
        self._running[job_id] = self._spawn(self._process(entry_id, job, fields))

    async def _process(self, entry_id: str, job: JobMessage, fields: dict[str, str]) -> None:
        self.stats.start_job()
        try:
            while True:
                accepted = asyncio.Event()
                ack = asyncio.ensure_future(self._ack_when(accepted, entry_id, job, fields))
                try:
                    result = await self.runner.run(job, accepted.set)
                except JobDeferred as exc:
                    log.warning("job %s: %s; trying again in %.0fs", job.job_id, exc, _DEFERRED_RETRY_S)
                    await self._settle_ack(ack, accepted)
                    await self._pause(_DEFERRED_RETRY_S)
                    if self._stopping.is_set():
                        return
                    continue
                except (MalformedJob, JobRejected) as exc:
                    await self._settle_ack(ack, accepted)
                    await self._answer_failed(entry_id, job.job_id, job.line_id, fields, str(exc))
                    return
                await self._settle_ack(ack, accepted)
                await self._answer(entry_id, job, result)
                return
        finally:
            self.stats.end_job()
            self._done(job.job_id)

    async def _settle_ack(self, ack: "asyncio.Future[None]", accepted: asyncio.Event) -> None:
        """Wait for the ACCEPTED transaction if it started, so the answer's transaction comes after it."""
        if accepted.is_set():
            await ack
        else:
            ack.cancel()
            await asyncio.gather(ack, return_exceptions=True)

    async def _ack_when(self, accepted: asyncio.Event, entry_id: str, job: JobMessage,
                        fields: dict[str, str]) -> None:
        await accepted.wait()
        record = json.dumps({"consumer": self.consumer, "entry_id": entry_id, "fields": fields})

        async def ack() -> None:
            async with self.redis.pipeline(transaction=True) as tx:
                tx.hset(self.inflight, job.job_id, record)
                tx.xack(self.stream, self.group, entry_id)
                await tx.execute()

        await self._retrying(ack)
        self.stats.on_acked()

    async def _answer(self, entry_id: str, job: JobMessage, result: dict[str, Any]) -> None:
        entry = {"id": job.line_id, "job_id": job.job_id, "entry_id": entry_id, "status": "done",
                 "path": result["path"], "sha256": result["sha256"], "duration_ms": str(result["duration_ms"]),
                 "sample_rate": str(result["sample_rate"]), "cached": "1" if result["cached"] else "0", "error": ""}

        await self._answer_once(entry_id, job.job_id, entry, None)
        self.stats.on_answered()

    async def _reject(self, entry_id: str, job_id: str, fields: dict[str, str], reason: str) -> None:
        self.stats.start_job()
        try:
            await self._answer_failed(entry_id, job_id, fields.get("id", entry_id)[:256], fields, reason)
        finally:
            self.stats.end_job()
            self._done(job_id)

    async def _answer_failed(self, entry_id: str, job_id: str, line_id: str, fields: dict[str, str],
                             reason: str) -> None:
        log.warning("job %s (entry %s): dead-lettered: %s", job_id, entry_id, reason)
        result = {"id": line_id, "job_id": job_id, "entry_id": entry_id, "status": "failed", "path": "",
                  "sha256": "", "duration_ms": "0", "error": reason}
        # The dead-letter entry keeps the message (a 10 MB text is cut: the reason says what it was).
        kept = {k: (v if len(v) <= 4096 else v[:4096] + "...") for k, v in fields.items()}
        dead = {**kept, "dead_entry_id": entry_id, "dead_job_id": job_id, "dead_reason": reason}

        await self._answer_once(entry_id, job_id, result, dead)
        self.stats.on_failed()

    async def _answer_once(self, entry_id: str, job_id: str, result: dict[str, str],
                           dead: Optional[dict[str, str]]) -> None:
        """Result entry (and dead letter), in-flight record removed, entry acked: one script, run at most once."""
        def flat(fields: dict[str, str]) -> str:
            return json.dumps([str(x) for pair in fields.items() for x in pair])

        async def answer() -> Any:
            return await self.redis.eval(  # type: ignore[misc]
                _ANSWER, 4, self.stream, self.inflight, self.results, self.dead, self.group, entry_id, job_id,
                flat(result), flat(dead) if dead is not None else "")

        if not await self._retrying(answer):
            log.info("job %s (entry %s): already answered", job_id, entry_id)

    def _done(self, job_id: str) -> None:
        self._running.pop(job_id, None)
        self._slot_free.set()

    # ---- dead bridges ------------------------------------------------------------------------------------

    async def _reclaim(self) -> None:
        """Take over a dead bridge's work: idle pending entries (XAUTOCLAIM) and orphaned in-flight records."""
        min_idle_ms = int(self.settings.dead_after_s * 1000)
        start = "0-0"
        while True:
            reply = await self.redis.xautoclaim(self.stream, self.group, self.consumer, min_idle_ms, start,
                                                count=100)
            start, claimed = reply[0], reply[1]
            for entry_id, fields in claimed:
                if fields is not None:  # None: the entry was trimmed from the stream
                    log.info("redis-streams: claimed idle entry %s", entry_id)
                    self._take(entry_id, fields)
            if start == "0-0" or not claimed:
                break
        records = await self.redis.hgetall(self.inflight)
        for job_id, raw in records.items():
            if job_id in self._running:
                continue
            try:
                record = json.loads(raw)
                owner, entry_id, fields = record["consumer"], record["entry_id"], record["fields"]
            except (ValueError, KeyError, TypeError):
                continue
            if owner == self.consumer or await self.redis.exists(self._heartbeat(owner)):
                continue
            mine = json.dumps({**record, "consumer": self.consumer})
            if await self.redis.eval(_TAKE_OVER, 1, self.inflight, job_id, raw, mine):
                log.info("job %s: taking over from dead bridge %s", job_id, owner)
                self._take(entry_id, fields)

    async def _beat(self) -> None:
        await self.redis.set(self._heartbeat_key, "1", px=int(self.settings.dead_after_s * 1000))

    async def _measure_lag(self) -> None:
        for group in await self.redis.xinfo_groups(self.stream):
            if group.get("name") == self.group:
                lag = group.get("lag")
                self.stats.set_lag(int(lag) if lag is not None else 0)

    async def _ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    # ---- plumbing ----------------------------------------------------------------------------------------

    async def _retrying(self, op: Callable[[], Awaitable[T]]) -> T:
        """Run a Redis operation until it succeeds: an answer is never dropped because Redis restarted."""
        attempt = 0
        while True:
            try:
                return await op()
            except _RETRY_ERRORS as exc:
                if self._stopping.is_set():
                    raise BridgeStopped(f"stopped while redis was unavailable ({exc})") from exc
                delay = _BACKOFF_S[min(attempt, len(_BACKOFF_S) - 1)]
                attempt += 1
                if attempt == 1 or attempt % 10 == 0:
                    log.warning("redis-streams: redis unavailable (%s); retrying", exc)
                await asyncio.sleep(delay)

    async def _every(self, interval_s: float, op: Callable[[], Awaitable[None]], *, first: bool = False) -> None:
        if not first:
            await asyncio.sleep(interval_s)
        while True:
            try:
                await op()
            except _RETRY_ERRORS as exc:
                log.debug("redis-streams: %s failed: %s", getattr(op, "__name__", op), exc)
            except ResponseError as exc:
                log.warning("redis-streams: %s failed: %s", getattr(op, "__name__", op), exc)
            await asyncio.sleep(interval_s)

    def _spawn(self, coro: Awaitable[Any]) -> "asyncio.Task[Any]":
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_log_crash)
        return task

    async def _pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    async def _wait_any(self, event: asyncio.Event) -> None:
        waiters = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(self._stopping.wait())]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for w in waiters:
            w.cancel()


def _log_crash(task: "asyncio.Task[Any]") -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("redis-streams: task failed", exc_info=task.exception())
