"""What the broker does with each decoded command: one table for clients, one for workers.

Handlers translate a message into lifecycle transitions or into a reply built from the broker's state.
They never touch sockets: replies go into the lifecycle's outbox like everything else.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable, Optional

from tts_protocol import Command, ErrorCode
from tts_protocol.codec import Message
from tts_protocol.messages import (
    AdminReply,
    BrokerStatusReply,
    CancelJob,
    Disconnect,
    DrainWorker,
    Fail,
    Heartbeat,
    JobsReply,
    JobsRequest,
    JobStatusReply,
    JobStatusRequest,
    ModelRequest,
    Partial,
    Pong,
    Ready,
    Reload,
    ReloadReply,
    Request,
    RetryJob,
    StatusView,
    Submit,
    WorkerReload,
    WorkerResult,
)

from tts_broker.lifecycle import Lifecycle
from tts_broker.workers import WorkerRecord

log = logging.getLogger(__name__)

ClientHandler = Callable[[bytes, Any, float], None]
WorkerHandler = Callable[[WorkerRecord, Message, float], None]


@dataclasses.dataclass(frozen=True, slots=True)
class BrokerInfo:
    """Who this broker is, for PONG and the status view."""

    broker_id: str
    version: str
    started_at: float  # monotonic


class ClientCommands:
    """Handlers for the client port, by command."""

    def __init__(self, life: Lifecycle, info: BrokerInfo) -> None:
        self.life = life
        self.info = info
        self.table: dict[Command, ClientHandler] = {
            Command.SUBMIT: self.submit,
            Command.CANCEL: self.cancel,
            Command.JOB_STATUS: self.job_status,
            Command.BROKER_STATUS: self.broker_status,
            Command.PING: self.ping,
            Command.RELOAD: self.reload,
            Command.JOBS: self.jobs,
            Command.RETRY: self.retry,
            Command.DRAIN_WORKER: self.drain_worker,
            Command.PAUSE_MODEL: self.pause_model,
            Command.RESUME_MODEL: self.resume_model,
        }

    def submit(self, identity: bytes, req: Submit, now: float) -> None:
        self.life.submit(identity, req, now)

    def cancel(self, identity: bytes, req: CancelJob, now: float) -> None:
        self.life.cancel(identity, req.job_id)

    def job_status(self, identity: bytes, req: JobStatusRequest, now: float) -> None:
        job = self.life.jobs.get(req.job_id)
        if job is None:
            self.life.outbox.error(identity, ErrorCode.NOT_FOUND, f"no job {req.job_id}", req_id=req.req_id)
            return
        self.life.outbox.client(identity, Command.JOB_STATUS_REPLY, JobStatusReply(req_id=req.req_id,
                                                                                   job=job.view(now)))

    def broker_status(self, identity: bytes, req: Request, now: float) -> None:
        self.life.outbox.client(identity, Command.BROKER_STATUS_REPLY,
                                BrokerStatusReply(req_id=req.req_id, status=status_view(self.life, self.info, now)))

    def ping(self, identity: bytes, req: Request, now: float) -> None:
        self.life.outbox.client(identity, Command.PONG, Pong(req_id=req.req_id, broker_id=self.info.broker_id,
                                                             time_ms=int(time.time() * 1000)))

    def reload(self, identity: bytes, req: Reload, now: float) -> None:
        life = self.life
        told = 0
        for worker in life.workers:
            if worker.serves(req.model):
                life.outbox.worker(worker.identity, Command.B_RELOAD, WorkerReload(options=req.options))
                told += 1
        for hook in life.hooks:
            hook.reloaded(req.model)
        log.info("reload (model %s) sent to %d workers", req.model, told)
        life.outbox.client(identity, Command.RELOAD_REPLY, ReloadReply(req_id=req.req_id, workers=told))

    def jobs(self, identity: bytes, req: JobsRequest, now: float) -> None:
        views = [job.view(now) for job in self.life.jobs.recent(req.state, req.limit)]
        self.life.outbox.client(identity, Command.JOBS_REPLY, JobsReply(req_id=req.req_id, jobs=views))

    def retry(self, identity: bytes, req: RetryJob, now: float) -> None:
        life = self.life
        job = life.jobs.get(req.job_id)
        if job is None:
            life.outbox.error(identity, ErrorCode.NOT_FOUND, f"no job {req.job_id}", req_id=req.req_id)
            return
        refused = life.retry(job, now)
        if refused is not None:
            life.outbox.error(identity, ErrorCode.BAD_REQUEST, refused, req_id=req.req_id)
            return
        life.outbox.client(identity, Command.JOB_STATUS_REPLY, JobStatusReply(req_id=req.req_id, job=job.view(now)))

    def drain_worker(self, identity: bytes, req: DrainWorker, now: float) -> None:
        life = self.life
        if (req.worker is None) == (req.host is None):
            life.outbox.error(identity, ErrorCode.BAD_REQUEST, "DRAIN_WORKER needs exactly one of worker or host",
                              req_id=req.req_id)
            return
        workers = life.workers.matching(worker=req.worker, host=req.host)
        if not workers:
            what = f"worker {req.worker}" if req.worker is not None else f"host {req.host}"
            life.outbox.error(identity, ErrorCode.NOT_FOUND, f"no connected {what}", req_id=req.req_id)
            return
        ids = [w.worker_id for w in workers]
        life.drain_workers(workers)
        self._admin_reply(identity, req.req_id, ids)

    def pause_model(self, identity: bytes, req: ModelRequest, now: float) -> None:
        self.life.pause(req.model)
        self._admin_reply(identity, req.req_id, [])

    def resume_model(self, identity: bytes, req: ModelRequest, now: float) -> None:
        self.life.resume(req.model)
        self._admin_reply(identity, req.req_id, [])

    def _admin_reply(self, identity: bytes, req_id: str, workers: list[str]) -> None:
        self.life.outbox.client(identity, Command.ADMIN_REPLY,
                                AdminReply(req_id=req_id, workers=workers, paused=sorted(self.life.paused)))


class WorkerCommands:
    """Handlers for the worker port, by command; READY is handled before the sender is known."""

    def __init__(self, life: Lifecycle) -> None:
        self.life = life
        self.table: dict[Command, WorkerHandler] = {
            Command.W_HEARTBEAT: self.heartbeat,
            Command.W_RESULT: self.result,
            Command.W_PARTIAL: self.partial,
            Command.W_FAIL: self.fail,
            Command.W_DISCONNECT: self.disconnect,
        }

    def handle(self, identity: bytes, worker: Optional[WorkerRecord], message: Message, now: float) -> None:
        if message.command is Command.W_READY:
            body: Ready = message.body  # type: ignore[assignment]
            self.life.worker_ready(identity, body, now)
        elif worker is not None:
            self.table[message.command](worker, message, now)
        elif message.command is not Command.W_DISCONNECT:
            log.info("unknown worker %r sent %s: asking it to re-register", identity, message.command.name)
            self.life.outbox.worker(identity, Command.B_DISCONNECT, Disconnect(reason="unknown worker; send READY"))

    def heartbeat(self, worker: WorkerRecord, message: Message, now: float) -> None:
        body: Heartbeat = message.body  # type: ignore[assignment]
        worker.update_stats(body.stats)

    def result(self, worker: WorkerRecord, message: Message, now: float) -> None:
        body: WorkerResult = message.body  # type: ignore[assignment]
        self.life.complete(worker, body, message.payload, now)

    def partial(self, worker: WorkerRecord, message: Message, now: float) -> None:
        body: Partial = message.body  # type: ignore[assignment]
        self.life.partial(worker, body, message.payload)

    def fail(self, worker: WorkerRecord, message: Message, now: float) -> None:
        body: Fail = message.body  # type: ignore[assignment]
        self.life.worker_failed(worker, body)

    def disconnect(self, worker: WorkerRecord, message: Message, now: float) -> None:
        body: Disconnect = message.body  # type: ignore[assignment]
        log.info("worker %s leaves: %s", worker.worker_id, body.reason)
        self.life.worker_gone(worker, "left")


def status_view(life: Lifecycle, info: BrokerInfo, now: float) -> StatusView:
    """The broker's state as BROKER_STATUS reports it (PROTOCOL.md section 6)."""
    jobs = life.jobs
    running = sum(len(w.held_jobs()) for w in life.workers)
    job_fields: dict[str, Any] = {
        "running": running, "live": jobs.live_count, "done": jobs.done_total, "failed": jobs.failed_total,
        "retained": jobs.retained_count, "retained_bytes": jobs.retained_bytes,
        "journal": None, "journal_commits": 0, "cache": None,
    }
    for hook in life.hooks:
        job_fields.update(hook.status())
    return StatusView(
        broker_id=info.broker_id,
        version=info.version,
        uptime_s=round(now - info.started_at, 3),
        draining=life.draining,
        queue={"depth": len(life.queue), "max": life.settings.max_queue,
               "by_priority": life.queue.depth_by_priority()},
        jobs=job_fields,
        workers=[w.view(now) for w in life.workers],
        paused=sorted(life.paused),
    )
