"""`tts bridge amqp`: jobs from a RabbitMQ (quorum) queue, answers RPC style to each message's reply_to.

Acknowledgement: a message is acked in one AMQP transaction with its answer (the reply to reply_to with its
correlation_id, plus the dead letter for a failure): both happen or neither. AMQP has nowhere to keep a message
that was acked before its answer existed, so acking at ACCEPTED (as the Streams bridge does, which keeps such
entries in an in-flight hash) would lose the answer of a bridge killed in between; the broker's journal and
the stable job id (the message_id, else a digest of the body) make a redelivery cheap instead: it attaches to
the broker's job or gets its retained result, and nothing is synthesised twice.

Prefetch follows the fleet: every few seconds basic.qos is set to this bridge's jobs in flight plus the free
worker slots the broker reports (at least 1, at most max_in_flight).

A connection lost (RabbitMQ restarted) is reopened with backoff; unacked messages come back, a redelivered
message whose job is still running here is attached to it, and the answer goes out on the new channel.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
from typing import Any, Optional

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from tts_bridge.errors import JobDeferred, JobRejected, MalformedJob
from tts_bridge.message import decode_json, job_id_from, parse_job
from tts_bridge.runner import JobRunner
from tts_bridge.settings import BridgeSettings
from tts_bridge.stats import BridgeStats

log = logging.getLogger(__name__)

_BACKOFF_S = (0.2, 0.5, 1.0, 2.0)
_QOS_INTERVAL_S = 2.0
_DEFERRED_RETRY_S = 2.0
_DEAD_BODY_MAX = 1024 * 1024


@dataclasses.dataclass(eq=False)
class _Delivery:
    """One job and the newest delivery of its message (a redelivery after a reconnect replaces it)."""

    job_id: str
    message: AbstractIncomingMessage
    answer: Optional[dict[str, Any]] = None
    dead_reason: Optional[str] = None
    fresh: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)


class AmqpBridge:
    """A consumer of one queue; answers with the reply in the same transaction as the ack."""

    name = "amqp"

    def __init__(self, runner: JobRunner, settings: BridgeSettings, stats: BridgeStats, *, url: str, queue: str,
                 dead: Optional[str] = None) -> None:
        self.runner = runner
        self.settings = settings
        self.stats = stats
        self.url = url
        self.queue_name = queue
        self.dead_name = dead or f"{queue}.dead"
        self._channel: Optional[AbstractChannel] = None
        self._answer_lock = asyncio.Lock()  # a transaction is the channel's: one answer at a time
        self._jobs: dict[str, _Delivery] = {}
        self._stopping = asyncio.Event()
        self._background: set[asyncio.Task[Any]] = set()
        self._prefetch = 0

    async def run(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            try:
                connection = await aio_pika.connect(self.url, timeout=5)
            except (OSError, aio_pika.exceptions.AMQPError, asyncio.TimeoutError) as exc:
                delay = _BACKOFF_S[min(attempt, len(_BACKOFF_S) - 1)]
                attempt += 1
                if attempt == 1 or attempt % 10 == 0:
                    log.warning("amqp: cannot connect (%s); retrying", exc)
                await self._pause(delay)
                continue
            attempt = 0
            try:
                await self._serve(connection)
            except (OSError, aio_pika.exceptions.AMQPError, asyncio.TimeoutError) as exc:
                log.warning("amqp: connection lost (%s); reconnecting", exc)
            finally:
                self._channel = None
                if not connection.is_closed:
                    await connection.close()
        if self._jobs:
            await asyncio.wait([t for t in self._background], timeout=10)

    async def _serve(self, connection: AbstractConnection) -> None:
        closed = asyncio.Event()
        connection.close_callbacks.add(lambda *_: closed.set())
        channel = await connection.channel(publisher_confirms=False)
        await channel.transaction().select()
        self._prefetch = max(1, min(self.settings.max_in_flight, 8))
        await channel.set_qos(prefetch_count=self._prefetch)
        await channel.declare_queue(self.dead_name, durable=True, arguments={"x-queue-type": "quorum"})
        queue = await channel.declare_queue(self.queue_name, durable=True, arguments={"x-queue-type": "quorum"})
        self._channel = channel
        await queue.consume(self._on_message)
        log.info("amqp: consuming %s", self.queue_name)
        for delivery in self._jobs.values():  # answers that waited for a channel
            delivery.fresh.set()
        stop = asyncio.ensure_future(self._stopping.wait())
        lost = asyncio.ensure_future(closed.wait())
        try:
            while not (stop.done() or lost.done()):
                await asyncio.wait([stop, lost], timeout=_QOS_INTERVAL_S)
                if not (stop.done() or lost.done()):
                    await self._tune_prefetch(channel)
        finally:
            stop.cancel()
            lost.cancel()

    async def _tune_prefetch(self, channel: AbstractChannel) -> None:
        free = await self.runner.free_capacity()
        want = max(1, min(self.settings.max_in_flight, len(self._jobs) + free))
        if want != self._prefetch:
            self._prefetch = want
            await channel.set_qos(prefetch_count=want)
        try:
            declared = await channel.declare_queue(self.queue_name, passive=True)
            self.stats.set_lag(int(declared.declaration_result.message_count or 0))
        except aio_pika.exceptions.AMQPError:
            pass

    def stop(self) -> None:
        self._stopping.set()

    async def aclose(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    # ---- one message -------------------------------------------------------------------------------------

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        job_id = self._job_id(message)
        known = self._jobs.get(job_id)
        if known is not None:  # a redelivery (reconnect) of a job running here: answer on the new delivery
            known.message = message
            known.fresh.set()
            return
        self.stats.on_consumed()
        delivery = _Delivery(job_id, message)
        self._jobs[job_id] = delivery
        task = asyncio.ensure_future(self._process(delivery))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _job_id(self, message: AbstractIncomingMessage) -> str:
        key = message.message_id or hashlib.sha256(message.body).hexdigest()[:32]
        return job_id_from("amqp", self.queue_name, key)

    async def _process(self, delivery: _Delivery) -> None:
        self.stats.start_job()
        try:
            try:
                obj = decode_json(delivery.message.body)
                job = parse_job(obj, default_id=delivery.message.message_id or delivery.job_id,
                                job_id=delivery.job_id, max_text_chars=self.settings.max_text_chars,
                                tenant_field=self.settings.tenant_field)
            except MalformedJob as exc:
                await self._fail(delivery, str(exc), line_id=None)
                return
            while True:
                try:
                    result = await self.runner.run(job, self.stats.on_acked)
                except JobDeferred as exc:
                    log.warning("job %s: %s; trying again in %.0fs", job.job_id, exc, _DEFERRED_RETRY_S)
                    await self._pause(_DEFERRED_RETRY_S)
                    if self._stopping.is_set():
                        return
                    continue
                except (MalformedJob, JobRejected) as exc:
                    await self._fail(delivery, str(exc), line_id=job.line_id)
                    return
                break
            delivery.answer = {"id": job.line_id, "job_id": job.job_id, "status": "done", **result, "error": ""}
            await self._deliver(delivery)
            self.stats.on_answered()
        finally:
            self._jobs.pop(delivery.job_id, None)
            self.stats.end_job()

    async def _fail(self, delivery: _Delivery, reason: str, *, line_id: Optional[str]) -> None:
        log.warning("job %s: dead-lettered: %s", delivery.job_id, reason)
        delivery.answer = {"id": line_id, "job_id": delivery.job_id, "status": "failed", "path": None,
                           "sha256": None, "duration_ms": 0, "error": reason}
        delivery.dead_reason = reason
        await self._deliver(delivery)
        self.stats.on_failed()

    async def _deliver(self, delivery: _Delivery) -> None:
        """Reply (and dead letter) and ack in one transaction; after a lost connection, on the redelivery."""
        while True:
            delivery.fresh.clear()
            channel = self._channel
            if channel is not None and not channel.is_closed:
                async with self._answer_lock:
                    if await self._commit_answer(channel, delivery):
                        return
            if self._stopping.is_set():
                return
            await self._wait_fresh(delivery)

    async def _commit_answer(self, channel: AbstractChannel, delivery: _Delivery) -> bool:
        """True once committed; False when the delivery belongs to a channel that is gone (a redelivery comes)."""
        message = delivery.message
        try:
            if message.channel is not await channel.get_underlay_channel():
                return False
            await self._publish_answer(channel, message, delivery)
            await message.ack()
            await channel.transaction().commit()
            return True
        except (aio_pika.exceptions.AMQPError, aio_pika.exceptions.ChannelInvalidStateError, OSError,
                RuntimeError) as exc:
            log.info("job %s: answer not committed (%s); waiting for the redelivery", delivery.job_id, exc)
            try:  # nothing of this answer may ride along with another one's commit
                await channel.transaction().rollback()
            except (aio_pika.exceptions.AMQPError, aio_pika.exceptions.ChannelInvalidStateError, OSError,
                    RuntimeError):
                pass
            return False

    async def _publish_answer(self, channel: AbstractChannel, message: AbstractIncomingMessage,
                              delivery: _Delivery) -> None:
        if delivery.dead_reason is not None:
            body = message.body if len(message.body) <= _DEAD_BODY_MAX else message.body[:_DEAD_BODY_MAX]
            await channel.default_exchange.publish(
                aio_pika.Message(body, headers={"x-tts-error": delivery.dead_reason, "x-tts-job-id": delivery.job_id,
                                                "x-tts-truncated": len(body) < len(message.body)},
                                 message_id=message.message_id, correlation_id=message.correlation_id,
                                 delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=self.dead_name)
        if message.reply_to:
            await channel.default_exchange.publish(
                aio_pika.Message(json.dumps(delivery.answer).encode(), content_type="application/json",
                                 correlation_id=message.correlation_id,
                                 delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=message.reply_to)

    async def _wait_fresh(self, delivery: _Delivery) -> None:
        waiters = [asyncio.ensure_future(delivery.fresh.wait()), asyncio.ensure_future(self._stopping.wait())]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for w in waiters:
            w.cancel()

    async def _pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except asyncio.TimeoutError:
            pass
