"""The command tables: what the core does with each decoded command, one table for clients, one for workers.

Handlers sit behind the core (core.py calls them; the server never does). Each turns a message into
transitions (lifecycle.py), dispatch steering (dispatcher.py) or a reply built from the broker's state. They
never touch sockets, clocks or disks: the sender, its principal and the time arrive in a `Call`, replies go
into the outbox like everything else.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
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
    StatusRequest,
    Submit,
    WorkerReload,
    WorkerResult,
)

from tts_broker.auth import Principal, can_see
from tts_broker.dispatcher import Dispatcher
from tts_broker.jobs import Job
from tts_broker.lifecycle import Lifecycle
from tts_broker.reloads import ReloadTracker
from tts_broker.status import BrokerInfo, BrokerState, public_worker_view, status_view
from tts_broker.workers import WorkerRecord

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class Call:
    """One client message being handled: who sent it, with which key, and when."""

    identity: bytes
    principal: Optional[Principal]  # None without CURVE (one trust domain, every right)
    now: float  # monotonic
    wall: float  # time.time()

    @property
    def admin(self) -> bool:
        return self.principal is None or self.principal.admin

    @property
    def owner(self) -> Optional[str]:
        """The key name jobs submitted by this sender belong to (None without CURVE)."""
        return self.principal.name if self.principal is not None else None


ClientHandler = Callable[[Call, Any], None]
WorkerHandler = Callable[[WorkerRecord, Message, float], None]

#: Client commands only admin keys may send when CURVE is on (one check in ClientCommands.handle covers
#: commands other modules add to the table: put their command here).
ADMIN_COMMANDS: set[Command] = {Command.RELOAD, Command.DRAIN_WORKER, Command.PAUSE_MODEL, Command.RESUME_MODEL}


class ClientCommands:
    """Handlers for the client port, by command."""

    def __init__(self, life: Lifecycle, dispatcher: Dispatcher, state: BrokerState, info: BrokerInfo,
                 reloads: ReloadTracker) -> None:
        self.life = life
        self.outbox = life.outbox
        self.jobs = life.jobs
        self.dispatcher = dispatcher
        self.state = state
        self.info = info
        self.reloads = reloads
        self.table: dict[Command, ClientHandler] = {
            Command.SUBMIT: self.submit,
            Command.CANCEL: self.cancel,
            Command.JOB_STATUS: self.job_status,
            Command.BROKER_STATUS: self.broker_status,
            Command.PING: self.ping,
            Command.RELOAD: self.reload,
            Command.JOBS: self.list_jobs,
            Command.RETRY: self.retry,
            Command.GET_RESULT: self.get_result,
            Command.DRAIN_WORKER: self.drain_worker,
            Command.PAUSE_MODEL: self.pause_model,
            Command.RESUME_MODEL: self.resume_model,
        }

    def handle(self, call: Call, message: Message) -> None:
        """Run the handler for `message`, after the one admin check (ADMIN_COMMANDS)."""
        principal = call.principal
        if principal is not None and not principal.admin and message.command in ADMIN_COMMANDS:
            req_id = getattr(message.body, "req_id", None)
            log.warning("client key %s sent %s: refused, admin keys only", principal.name, message.command.name)
            self.outbox.error(call.identity, ErrorCode.FORBIDDEN, f"{message.command.name} needs an admin key",
                              req_id=req_id)
            return
        self.table[message.command](call, message.body)

    def _visible(self, call: Call, job: Optional[Job], job_id: str, req_id: Optional[str] = None) -> bool:
        """True if the sender may see `job`; otherwise answers (not_found or forbidden) and returns False.

        The ERROR names the request (req_id) when there is one, else the job: a client routes it by that.
        """
        about = {"req_id": req_id} if req_id is not None else {"job_id": job_id}
        if job is None:
            self.outbox.error(call.identity, ErrorCode.NOT_FOUND, f"no job {job_id}", **about)
            return False
        if not can_see(call.principal, job.owner):
            self.outbox.error(call.identity, ErrorCode.FORBIDDEN, f"job {job_id} belongs to another client key",
                              **about)
            return False
        return True

    def _job_view(self, call: Call, job: Job) -> JobView:
        view = job.view(call.now)
        if not call.admin:
            view = view.model_copy(update={"worker_id": None, "workers": []})  # routing ids: admins only
        return view

    def submit(self, call: Call, req: Submit) -> None:
        if not req.text.strip():
            self.outbox.error(call.identity, ErrorCode.BAD_REQUEST, "text is empty or only whitespace",
                              job_id=req.job_id)
            return
        existing = self.life.find(req.job_id)  # a job set aside for the cache belongs to its submitter too
        if existing is not None and not self._visible(call, existing, req.job_id):
            return
        fault = self.state.journal_fault
        if fault is not None and existing is None:
            self.outbox.error(call.identity, ErrorCode.JOURNAL_UNAVAILABLE,
                              f"the broker cannot write its journal ({fault}); try again later", job_id=req.job_id)
            return
        self.life.submit(call.identity, req, call.now, call.wall, owner=call.owner, admin=call.admin)

    def cancel(self, call: Call, req: CancelJob) -> None:
        job = self.jobs.get(req.job_id)
        if job is not None and not self._visible(call, job, req.job_id):
            return
        self.life.cancel(call.identity, req.job_id, call.now)

    def job_status(self, call: Call, req: JobStatusRequest) -> None:
        job = self.jobs.get(req.job_id)
        if not self._visible(call, job, req.job_id, req.req_id):
            return
        assert job is not None
        self.outbox.client(call.identity, Command.JOB_STATUS_REPLY,
                           JobStatusReply(req_id=req.req_id, job=self._job_view(call, job)))

    def broker_status(self, call: Call, req: StatusRequest) -> None:
        status = status_view(self.state, self.info, call.now, req=req)
        if not call.admin:
            status = status.model_copy(update={"workers": [public_worker_view(w) for w in status.workers]})
        self.outbox.client(call.identity, Command.BROKER_STATUS_REPLY,
                           BrokerStatusReply(req_id=req.req_id, status=status))

    def ping(self, call: Call, req: Request) -> None:
        self.outbox.client(call.identity, Command.PONG, Pong(req_id=req.req_id, broker_id=self.info.broker_id,
                                                             time_ms=int(call.wall * 1000)))

    def reload(self, call: Call, req: Reload) -> None:
        told: list[WorkerRecord] = []
        for worker in self.life.workers:
            if worker.serves(req.model):
                self.outbox.worker(worker.identity, Command.B_RELOAD, WorkerReload(options=req.options))
                told.append(worker)
        self.life.hooks.emit("reloaded", req.model)
        log.info("reload (model %r) sent to %d workers", req.model, len(told))
        if req.wait_ms > 0:
            self.reloads.wait(call.identity, req.req_id, told, call.now, req.wait_ms / 1000)
            return
        self.outbox.client(call.identity, Command.RELOAD_REPLY, ReloadReply(req_id=req.req_id, workers=len(told)))

    def list_jobs(self, call: Call, req: JobsRequest) -> None:
        """Newest jobs; a non-admin key sees only its own (the listing of all jobs is an admin right)."""
        owner = None if call.admin else call.owner
        found = self.jobs.recent(req.state, req.limit, owner=owner)
        views = [self._job_view(call, job) for job in found]
        self.outbox.client(call.identity, Command.JOBS_REPLY, JobsReply(req_id=req.req_id, jobs=views))

    def retry(self, call: Call, req: RetryJob) -> None:
        job = self.jobs.get(req.job_id)
        if not self._visible(call, job, req.job_id, req.req_id):
            return
        assert job is not None
        refused = self.life.retry(job, call.now, call.wall)
        if refused is not None:
            self.outbox.error(call.identity, ErrorCode.BAD_REQUEST, refused, req_id=req.req_id)
            return
        self.outbox.client(call.identity, Command.JOB_STATUS_REPLY,
                           JobStatusReply(req_id=req.req_id, job=self._job_view(call, job)))

    def get_result(self, call: Call, req: GetResult) -> None:
        """GET_RESULT: a finished job's RESULT body and audio again, for a caller that only knows its id."""
        job = self.jobs.get(req.job_id)
        if job is None:
            self.outbox.error(call.identity, ErrorCode.NOT_FOUND,
                              f"no job {req.job_id} (unknown, or no longer retained)", req_id=req.req_id)
            return
        if not self._visible(call, job, req.job_id, req.req_id):  # another client key's audio: forbidden
            return
        if job.state is not JobState.DONE:
            self.outbox.error(call.identity, ErrorCode.BAD_REQUEST, f"job {req.job_id} is {job.state.value}, not"
                              " done", req_id=req.req_id)
            return
        if not job.result or job.audio is None:
            self.outbox.error(call.identity, ErrorCode.NOT_FOUND, f"job {req.job_id} is done but its audio is no"
                              " longer retained (result_ttl_s, max_retained_bytes)", req_id=req.req_id)
            return
        result = Result.model_validate(msgpack.unpackb(job.result, raw=False))
        self.outbox.client(call.identity, Command.RESULT_REPLY, ResultReply(req_id=req.req_id, result=result),
                           job.audio)

    def drain_worker(self, call: Call, req: DrainWorker) -> None:
        if (req.worker is None) == (req.host is None):
            self.outbox.error(call.identity, ErrorCode.BAD_REQUEST, "DRAIN_WORKER needs exactly one of worker or"
                              " host", req_id=req.req_id)
            return
        workers = self.life.workers.matching(worker=req.worker, host=req.host)
        if not workers:
            what = f"worker {req.worker}" if req.worker is not None else f"host {req.host}"
            self.outbox.error(call.identity, ErrorCode.NOT_FOUND, f"no connected {what}", req_id=req.req_id)
            return
        ids = [w.worker_id for w in workers]
        self.dispatcher.drain_workers(workers, call.now)
        self._admin_reply(call, req.req_id, ids)

    def pause_model(self, call: Call, req: ModelRequest) -> None:
        self.dispatcher.pause(req.model)
        self._admin_reply(call, req.req_id, [])

    def resume_model(self, call: Call, req: ModelRequest) -> None:
        self.dispatcher.resume(req.model)
        self._admin_reply(call, req.req_id, [])

    def _admin_reply(self, call: Call, req_id: str, workers: list[str]) -> None:
        self.outbox.client(call.identity, Command.ADMIN_REPLY,
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

    def handle(self, identity: bytes, worker: Optional[WorkerRecord], message: Message, now: float,
               key: Optional[str] = None) -> None:
        """`key`: the sender's ZAP User-Id under CURVE; a READY binds the new worker to it."""
        if message.command is Command.W_READY:
            body: Ready = message.body  # type: ignore[assignment]
            self.life.worker_ready(identity, body, now, key=key)
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
        self.life.partial(worker, body, message.payload, now)

    def fail(self, worker: WorkerRecord, message: Message, now: float) -> None:
        body: Fail = message.body  # type: ignore[assignment]
        self.life.worker_failed(worker, body, now)

    def disconnect(self, worker: WorkerRecord, message: Message, now: float) -> None:
        body: Disconnect = message.body  # type: ignore[assignment]
        log.info("worker %s leaves: %s", worker.worker_id, body.reason)
        self.life.worker_gone(worker, "left", now)


class KeyBinding:
    """Under CURVE, binds each routing id to the key of the first connection that used it.

    A later connection presenting the same routing id with another key (a copied id, ROUTER_HANDOVER) gets
    nothing: its messages are dropped unanswered (the core also drops a worker record made by the first key,
    its leases requeued, since the first key's connection is gone). What the broker sends to a client id is
    bound to the key too: it goes out only while that key's connection holds the id (client_links.py).
    Bounded: the least recently used bindings are forgotten.
    """

    def __init__(self, side: str, max_ids: int = 200_000) -> None:
        self.side = side
        self.max_ids = max_ids
        self._keys: collections.OrderedDict[bytes, str] = collections.OrderedDict()

    def check(self, identity: bytes, key: Optional[str]) -> bool:
        bound = self._keys.get(identity)
        if bound is None:
            self._keys[identity] = key or ""
            if len(self._keys) > self.max_ids:
                self._keys.popitem(last=False)
            return True
        if bound == (key or ""):
            self._keys.move_to_end(identity)  # an id in use is never the one forgotten
            return True
        log.warning("%s routing id %r is bound to key %s but arrived from key %s: dropped", self.side, identity,
                    bound, key)
        return False
