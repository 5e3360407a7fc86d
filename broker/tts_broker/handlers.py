"""What the broker does with each decoded command: one table for clients, one for workers.

Handlers translate a message into lifecycle transitions or into a reply built from the broker's state.
They never touch sockets: replies go into the lifecycle's outbox like everything else.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
from typing import Any, Callable, Optional

import msgpack

from tts_protocol import Command, ErrorCode
from tts_protocol.codec import Message
from tts_protocol.constants import JobState
from tts_protocol.messages import (
    AdminReply,
    BrokerStatusReply,
    CancelJob,
    Disconnect,
    DrainWorker,
    Fail,
    GetResult,
    Heartbeat,
    JobsReply,
    JobsRequest,
    JobStatusReply,
    JobStatusRequest,
    JobView,
    ModelRequest,
    Partial,
    Pong,
    Ready,
    Reload,
    ReloadReply,
    Request,
    Result,
    ResultReply,
    RetryJob,
    StatusView,
    Submit,
    WorkerReload,
    WorkerResult,
    WorkerView,
)

from tts_broker.auth import Principal, can_see
from tts_broker.jobs import Job
from tts_broker.lifecycle import Lifecycle
from tts_broker.reloads import ReloadTracker
from tts_broker.workers import WorkerRecord

log = logging.getLogger(__name__)

ClientHandler = Callable[[bytes, Any, float], None]
WorkerHandler = Callable[[WorkerRecord, Message, float], None]

#: Client commands only admin keys may send when CURVE is on (one check in ClientCommands.dispatch covers
#: commands other modules add to the table: put their command here).
ADMIN_COMMANDS: set[Command] = {Command.RELOAD}
for _name in ("DRAIN_WORKER", "PAUSE_MODEL", "RESUME_MODEL"):  # issue 12's admin commands, once they exist
    if _name in Command.__members__:
        ADMIN_COMMANDS.add(Command[_name])


@dataclasses.dataclass(frozen=True, slots=True)
class BrokerInfo:
    """Who this broker is, for PONG and the status view."""

    broker_id: str
    version: str
    started_at: float  # monotonic


class ClientCommands:
    """Handlers for the client port, by command."""

    def __init__(self, life: Lifecycle, info: BrokerInfo, *, reloads: Optional[ReloadTracker] = None) -> None:
        self.life = life
        self.info = info
        self.reloads = reloads or ReloadTracker(life.outbox)
        self.table: dict[Command, ClientHandler] = {
            Command.SUBMIT: self.submit,
            Command.CANCEL: self.cancel,
            Command.JOB_STATUS: self.job_status,
            Command.BROKER_STATUS: self.broker_status,
            Command.PING: self.ping,
            Command.RELOAD: self.reload,
            Command.JOBS: self.jobs,
            Command.RETRY: self.retry,
            Command.GET_RESULT: self.get_result,
            Command.DRAIN_WORKER: self.drain_worker,
            Command.PAUSE_MODEL: self.pause_model,
            Command.RESUME_MODEL: self.resume_model,
        }
        #: Who sent the message being handled: None without CURVE (one trust domain, every right).
        self.principal: Optional[Principal] = None
        # allow_high_priority = "admin": the sender of the SUBMIT being handled holds an admin key.
        life.is_admin = lambda _identity: self.principal is None or self.principal.admin

    def dispatch(self, identity: bytes, principal: Optional[Principal], message: Message, now: float) -> None:
        """Run the handler for `message`, after the one admin check (ADMIN_COMMANDS)."""
        self.principal = principal
        if principal is not None and not principal.admin and message.command in ADMIN_COMMANDS:
            req_id = getattr(message.body, "req_id", None)
            log.warning("client key %s sent %s: refused, admin keys only", principal.name, message.command.name)
            self.life.outbox.error(identity, ErrorCode.FORBIDDEN, f"{message.command.name} needs an admin key",
                                   req_id=req_id)
            return
        self.table[message.command](identity, message.body, now)

    @property
    def owner(self) -> Optional[str]:
        """The key name jobs submitted by the current sender belong to (None without CURVE)."""
        return self.principal.name if self.principal is not None else None

    def _visible(self, identity: bytes, job: Optional[Job], job_id: str, req_id: Optional[str] = None) -> bool:
        """True if the sender may see `job`; otherwise answers (not_found or forbidden) and returns False.

        The ERROR names the request (req_id) when there is one, else the job: a client routes it by that.
        """
        about = {"req_id": req_id} if req_id is not None else {"job_id": job_id}
        if job is None:
            self.life.outbox.error(identity, ErrorCode.NOT_FOUND, f"no job {job_id}", **about)
            return False
        if not can_see(self.principal, job.owner):
            self.life.outbox.error(identity, ErrorCode.FORBIDDEN, f"job {job_id} belongs to another client key",
                                   **about)
            return False
        return True

    def _job_view(self, job: Job, now: float) -> JobView:
        view = job.view(now)
        if self.principal is not None and not self.principal.admin:
            view = view.model_copy(update={"worker_id": None, "workers": []})  # routing ids: admins only
        return view

    def submit(self, identity: bytes, req: Submit, now: float) -> None:
        life = self.life
        if not req.text.strip():
            life.outbox.error(identity, ErrorCode.BAD_REQUEST, "text is empty or only whitespace",
                              job_id=req.job_id)
            return
        existing = life.jobs.get(req.job_id)
        if existing is not None and not self._visible(identity, existing, req.job_id):
            return
        if life.journal_fault is not None and existing is None:
            life.outbox.error(identity, ErrorCode.JOURNAL_UNAVAILABLE,
                              f"the broker cannot write its journal ({life.journal_fault}); try again later",
                              job_id=req.job_id)
            return
        life.submit(identity, req, now, owner=self.owner)

    def cancel(self, identity: bytes, req: CancelJob, now: float) -> None:
        job = self.life.jobs.get(req.job_id)
        if job is not None and not self._visible(identity, job, req.job_id):
            return
        self.life.cancel(identity, req.job_id)

    def job_status(self, identity: bytes, req: JobStatusRequest, now: float) -> None:
        job = self.life.jobs.get(req.job_id)
        if not self._visible(identity, job, req.job_id, req.req_id):
            return
        assert job is not None
        self.life.outbox.client(identity, Command.JOB_STATUS_REPLY, JobStatusReply(req_id=req.req_id,
                                                                                   job=self._job_view(job, now)))

    def broker_status(self, identity: bytes, req: Request, now: float) -> None:
        status = status_view(self.life, self.info, now)
        if self.principal is not None and not self.principal.admin:
            status = status.model_copy(update={"workers": [public_worker_view(w) for w in status.workers]})
        self.life.outbox.client(identity, Command.BROKER_STATUS_REPLY,
                                BrokerStatusReply(req_id=req.req_id, status=status))

    def ping(self, identity: bytes, req: Request, now: float) -> None:
        self.life.outbox.client(identity, Command.PONG, Pong(req_id=req.req_id, broker_id=self.info.broker_id,
                                                             time_ms=int(time.time() * 1000)))

    def reload(self, identity: bytes, req: Reload, now: float) -> None:
        life = self.life
        told: list[WorkerRecord] = []
        for worker in life.workers:
            if worker.serves(req.model):
                life.outbox.worker(worker.identity, Command.B_RELOAD, WorkerReload(options=req.options))
                told.append(worker)
        for hook in life.hooks:
            hook.reloaded(req.model)
        log.info("reload (model %r) sent to %d workers", req.model, len(told))
        if req.wait_ms > 0:
            self.reloads.wait(identity, req.req_id, told, now, req.wait_ms / 1000)
            return
        life.outbox.client(identity, Command.RELOAD_REPLY, ReloadReply(req_id=req.req_id, workers=len(told)))

    def jobs(self, identity: bytes, req: JobsRequest, now: float) -> None:
        """Newest jobs; a non-admin key sees only its own (the listing of all jobs is an admin right)."""
        principal = self.principal
        if principal is None or principal.admin:
            found = self.life.jobs.recent(req.state, req.limit)
        else:
            found = self.life.jobs.recent(req.state, req.limit, owner=principal.name)
        views = [self._job_view(job, now) for job in found]
        self.life.outbox.client(identity, Command.JOBS_REPLY, JobsReply(req_id=req.req_id, jobs=views))

    def retry(self, identity: bytes, req: RetryJob, now: float) -> None:
        life = self.life
        job = life.jobs.get(req.job_id)
        if not self._visible(identity, job, req.job_id, req.req_id):
            return
        assert job is not None
        refused = life.retry(job, now)
        if refused is not None:
            life.outbox.error(identity, ErrorCode.BAD_REQUEST, refused, req_id=req.req_id)
            return
        life.outbox.client(identity, Command.JOB_STATUS_REPLY, JobStatusReply(req_id=req.req_id,
                                                                               job=self._job_view(job, now)))


    def get_result(self, identity: bytes, req: GetResult, now: float) -> None:
        """GET_RESULT: a finished job's RESULT body and audio again, for a caller that only knows its id."""
        life = self.life
        job = life.jobs.get(req.job_id)
        if job is None:
            life.outbox.error(identity, ErrorCode.NOT_FOUND, f"no job {req.job_id} (unknown, or no longer retained)",
                              req_id=req.req_id)
            return
        if not self._visible(identity, job, req.job_id, req.req_id):  # another client key's audio: forbidden
            return
        if job.state is not JobState.DONE:
            life.outbox.error(identity, ErrorCode.BAD_REQUEST, f"job {req.job_id} is {job.state.value}, not done",
                              req_id=req.req_id)
            return
        if not job.result or job.audio is None:
            life.outbox.error(identity, ErrorCode.NOT_FOUND, f"job {req.job_id} is done but its audio is no longer "
                              "retained (result_ttl_s, max_retained_bytes)", req_id=req.req_id)
            return
        result = Result.model_validate(msgpack.unpackb(job.result, raw=False))
        life.outbox.client(identity, Command.RESULT_REPLY, ResultReply(req_id=req.req_id, result=result), job.audio)

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

    def __init__(self, life: Lifecycle, *, reloads: Optional[ReloadTracker] = None) -> None:
        self.life = life
        self.reloads = reloads
        self.table: dict[Command, WorkerHandler] = {
            Command.W_HEARTBEAT: self.heartbeat,
            Command.W_RESULT: self.result,
            Command.W_PARTIAL: self.partial,
            Command.W_FAIL: self.fail,
            Command.W_DISCONNECT: self.disconnect,
        }

    def handle(self, identity: bytes, worker: Optional[WorkerRecord], message: Message, now: float,
               key: Optional[str] = None) -> None:
        """`key`: the sender's ZAP User-Id under CURVE; a READY binds the new worker to it."""
        if message.command is Command.W_READY:
            body: Ready = message.body  # type: ignore[assignment]
            self.life.worker_ready(identity, body, now)
            record = self.life.workers.get(identity)
            if record is not None:
                record.key = key
            if self.reloads is not None:
                self.reloads.worker_ready(body)
        elif worker is not None:
            self.table[message.command](worker, message, now)
        elif message.command is not Command.W_DISCONNECT:
            log.info("unknown worker %r sent %s: asking it to re-register", identity, message.command.name)
            self.life.outbox.worker(identity, Command.B_DISCONNECT, Disconnect(reason="unknown worker; send READY"))

    def heartbeat(self, worker: WorkerRecord, message: Message, now: float) -> None:
        body: Heartbeat = message.body  # type: ignore[assignment]
        worker.update_stats(body.stats)
        capacity = None if body.capacity is None else min(body.capacity, self.life.settings.max_worker_capacity)
        if self.life.workers.set_capacity(worker, capacity):
            self.life.dirty = True

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


class KeyBinding:
    """Under CURVE, binds each routing id to the key of the first connection that used it.

    A later connection presenting the same routing id with another key (a copied id, ROUTER_HANDOVER) gets
    nothing: its messages are dropped unanswered, and a worker record made by the first key is dropped, its
    leases requeued, since the first key's connection is gone. Bounded: the oldest bindings are forgotten.
    """

    def __init__(self, side: str, max_ids: int = 200_000) -> None:
        self.side = side
        self.max_ids = max_ids
        self._keys: collections.OrderedDict[bytes, str] = collections.OrderedDict()

    def check(self, identity: bytes, key: Optional[str], life: Optional[Lifecycle] = None) -> bool:
        bound = self._keys.get(identity)
        if bound is None:
            self._keys[identity] = key or ""
            if len(self._keys) > self.max_ids:
                self._keys.popitem(last=False)
            return True
        if bound == (key or ""):
            return True
        log.warning("%s routing id %r is bound to key %s but arrived from key %s: dropped", self.side, identity,
                    bound, key)
        if life is not None:
            worker = life.workers.get(identity)
            if worker is not None and worker.key != key:
                life.worker_gone(worker, "lost its routing id to another key's connection")
        return False


def public_worker_view(view: WorkerView) -> WorkerView:
    """A worker as non-admin keys see it: no routing id, host, process id or name."""
    alias = f"{view.engine}-{abs(hash(view.worker_id)) % 10**8:08d}"
    return view.model_copy(update={"worker_id": alias, "name": alias, "host": "", "pid": 0})


def status_view(life: Lifecycle, info: BrokerInfo, now: float) -> StatusView:
    """The broker's state as BROKER_STATUS reports it (PROTOCOL.md section 6)."""
    jobs = life.jobs
    running = sum(len(w.held_jobs()) for w in life.workers)
    job_fields: dict[str, Any] = {
        "running": running, "live": jobs.live_count, "done": jobs.done_total, "failed": jobs.failed_total,
        "retained": jobs.retained_count, "retained_bytes": jobs.retained_bytes,
        "retained_max_bytes": life.settings.max_retained_bytes, "retained_dropped": jobs.evicted,
        "retained_dropped_bytes": jobs.evicted_bytes,
        "journal": None, "journal_commits": 0, "journal_fault": None, "cache": None,
    }
    for hook in life.hooks:
        job_fields.update(hook.status())
    return StatusView(
        broker_id=info.broker_id,
        version=info.version,
        uptime_s=round(now - info.started_at, 3),
        draining=life.draining,
        default_model=life.settings.default_model,
        queue={"depth": len(life.queue), "max": life.settings.max_queue,
               "by_priority": life.queue.depth_by_priority()},
        jobs=job_fields,
        workers=[w.view(now) for w in life.workers],
        paused=sorted(life.paused),
    )
