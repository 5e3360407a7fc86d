"""The broker daemon: two ROUTER sockets, one poll loop, handlers per command.

Single-threaded on purpose: all state (JobTable, JobQueue, WorkerRegistry) is touched from this loop only,
so there are no locks, and a TTS job (0.1-10 s) costs the broker ~100 us.
"""

from __future__ import annotations

import heapq
import json
import logging
import os
import secrets
import signal
import time
from pathlib import Path
from typing import Any, Callable, Optional

import zmq

from tts_protocol import Command, ErrorCode, ProtocolError, Side, decode, encode
from tts_protocol.codec import pack_body
from tts_protocol.constants import JobState, Priority
from tts_protocol.messages import (
    BrokerStatusReply,
    CancelJob,
    CancelLease,
    Disconnect,
    Empty,
    Error,
    ErrorInfo,
    Fail,
    JobStatusReply,
    JobStatusRequest,
    JobsReply,
    JobsRequest,
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

from tts_broker import __version__, wire
from tts_broker.jobs import Job, JobTable
from tts_broker.journal import Journal
from tts_broker.result_cache import ResultCache, cache_key
from tts_broker.queue import JobQueue
from tts_broker.settings import BrokerSettings
from tts_broker.workers import WorkerRecord, WorkerRegistry

log = logging.getLogger(__name__)

_MORE = int(zmq.SNDMORE | zmq.NOBLOCK)
_LAST = int(zmq.NOBLOCK)
_BATCH = 256  # messages read from one socket before looking at the other
_TICK_S = 0.05
_PURGE_EVERY_S = 10.0

_C_HEADER = Side.CLIENT.value
_W_HEADER = Side.WORKER.value
_B_HEARTBEAT_FRAMES = encode(Command.B_HEARTBEAT, Empty())
_COMMAND_BYTES = {command: bytes((command,)) for command in Command}


class Broker:
    """Queues jobs from clients and leases them to workers (PROTOCOL.md)."""

    def __init__(self, settings: BrokerSettings, *, context: Optional[zmq.Context] = None) -> None:
        self.settings = settings
        self.broker_id = "b-" + secrets.token_hex(6)
        self.ctx = context or zmq.Context.instance()
        self.jobs = JobTable(
            ttl_s=settings.result_ttl_s, max_jobs=settings.max_retained_jobs, max_bytes=settings.max_retained_bytes
        )
        self.queue = JobQueue()
        self.workers = WorkerRegistry()
        self.started_at = time.monotonic()
        self.draining = False
        self.drain_until = 0.0
        self._stop_now = False
        self._deadlines: list[tuple[float, str]] = []  # whole-job deadlines, lazily validated
        self._lease_deadlines: list[tuple[float, str, int]] = []
        self._unroutable_since: dict[Optional[str], float] = {}
        self._dirty = False  # something changed that may allow a dispatch
        self._next_heartbeat = 0.0
        # Messages that promise durability (ACCEPTED, RESULT, JOB) wait here for the loop's group commit.
        self._outbox: list[tuple[zmq.Socket, bytes, Command, Any, Any]] = []
        self._next_purge = 0.0
        journal_file = settings.journal_file()
        self.journal = Journal(journal_file, synchronous=settings.journal_sync) if journal_file else None
        cache_folder = settings.cache_folder()
        self.cache = ResultCache(cache_folder, max_bytes=settings.cache_max_mb * 1024 * 1024) \
            if cache_folder else None
        if self.journal is not None:
            self._restore()
        self.frontend = self._router(settings.frontend, settings.frontend_max_msg_bytes)
        self.backend = self._router(settings.backend, settings.backend_max_msg_bytes)
        self.frontend_endpoint = self.frontend.getsockopt_string(zmq.LAST_ENDPOINT)
        self.backend_endpoint = self.backend.getsockopt_string(zmq.LAST_ENDPOINT)
        self._client_handlers: dict[Command, Callable[[bytes, Any], None]] = {
            Command.SUBMIT: self._on_submit,
            Command.CANCEL: self._on_cancel,
            Command.JOB_STATUS: self._on_job_status,
            Command.BROKER_STATUS: self._on_broker_status,
            Command.PING: self._on_ping,
            Command.RELOAD: self._on_reload,
            Command.JOBS: self._on_jobs,
            Command.RETRY: self._on_retry,
        }

    def _restore(self) -> None:
        """Reload the journal: unfinished jobs are queued again (running ones too), finished ones retained."""
        assert self.journal is not None
        restored = self.journal.restore(retain_s=self.settings.result_ttl_s)
        for job in restored.finished:
            self.jobs.retain(job)
        for job in restored.unfinished:
            self.jobs.add(job)
            self.queue.push(job)
            if job.deadline is not None:
                heapq.heappush(self._deadlines, (job.deadline, job.job_id))
        self._dirty = bool(restored.unfinished)
        log.info("journal %s: %d unfinished jobs requeued, %d finished jobs retained", self.journal.path,
                 len(restored.unfinished), len(restored.finished))

    # ---- sockets ---------------------------------------------------------------------------------

    def _router(self, endpoint: str, max_msg_bytes: int) -> zmq.Socket:
        sock = self.ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        sock.setsockopt(zmq.LINGER, 500)
        sock.setsockopt(zmq.MAXMSGSIZE, max_msg_bytes)
        sock.setsockopt(zmq.SNDHWM, 100_000)
        sock.setsockopt(zmq.RCVHWM, 100_000)
        sock.bind(endpoint)
        return sock

    def _send(self, sock: zmq.Socket, identity: bytes, frames: list[Any]) -> bool:
        """Non-blocking send; an unreachable or saturated peer is logged and skipped, never waited on.

        Frames go out one by one with precomputed int flags: pyzmq's send_multipart spends a third of its
        time combining enum flags, and this is the broker's hottest path.
        """
        send = sock.send
        try:
            send(identity, _MORE)
        except zmq.ZMQError as exc:
            if exc.errno in (zmq.EHOSTUNREACH, zmq.EAGAIN):
                log.debug("peer %r unreachable (%s); message dropped", identity, exc.strerror)
                return False
            raise
        last = len(frames) - 1
        for i, frame in enumerate(frames):
            send(frame, _MORE if i < last else _LAST, copy=False)
        return True

    def _to_client(self, identity: bytes, command: Command, body: Any, payload: Any = None) -> bool:
        """Send to a client; `body` is a Body model or an already packed body (hot paths)."""
        frames = [b"", _C_HEADER, _COMMAND_BYTES[command], body if isinstance(body, bytes) else pack_body(body)]
        if payload is not None:
            frames.append(payload)
        return self._send(self.frontend, identity, frames)

    def _to_worker(self, identity: bytes, command: Command, body: Any) -> bool:
        packed = body if isinstance(body, bytes) else pack_body(body)
        return self._send(self.backend, identity, [b"", _W_HEADER, _COMMAND_BYTES[command], packed])

    def _client_error(
        self, identity: bytes, code: ErrorCode, message: str, *, job_id: Optional[str] = None,
        req_id: Optional[str] = None,
    ) -> None:
        self._to_client(identity, Command.ERROR, Error(job_id=job_id, req_id=req_id, code=code.value,
                                                       message=message[:4096], retryable=code.retryable))

    # ---- main loop -------------------------------------------------------------------------------

    def write_ready_file(self, path: str) -> None:
        info = {"frontend": self.frontend_endpoint, "backend": self.backend_endpoint, "pid": os.getpid(),
                "broker_id": self.broker_id}
        target = Path(path)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(json.dumps(info))
        os.replace(tmp, target)

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.draining:
            log.warning("second signal %d: stopping now", signum)
            self._stop_now = True
        else:
            self.start_drain()

    def start_drain(self) -> None:
        log.info("draining: no new jobs; %d queued and %d live jobs get %.1fs to finish",
                 len(self.queue), self.jobs.live_count, self.settings.drain_grace_s)
        self.draining = True
        self.drain_until = time.monotonic() + self.settings.drain_grace_s

    def run(self) -> None:
        """Serve until drained or told to stop."""
        log.info("broker %s listening: clients %s, workers %s", self.broker_id, self.frontend_endpoint,
                 self.backend_endpoint)
        poller = zmq.Poller()
        poller.register(self.frontend, zmq.POLLIN)
        poller.register(self.backend, zmq.POLLIN)
        next_tick = 0.0
        try:
            while not self._stop_now:
                events = dict(poller.poll(int(_TICK_S * 1000)))
                if self.backend in events:
                    self._drain_socket(self.backend, self._on_worker_frames, copy=False)
                if self.frontend in events:
                    self._drain_socket(self.frontend, self._on_client_frames, copy=True)
                now = time.monotonic()
                if now >= next_tick:
                    next_tick = now + _TICK_S
                    self._tick(now)
                    if self.draining and self._drain_finished(now):
                        self._commit()
                        break
                if self._dirty:
                    self._dispatch()
                self._commit()  # one group commit per turn of the loop
        finally:
            self._shutdown()

    def _drain_socket(self, sock: zmq.Socket, handler: Callable[[list[Any]], None], *, copy: bool) -> None:
        """Handle up to _BATCH waiting messages. Worker messages stay zero-copy (audio is forwarded as is)."""
        for _ in range(_BATCH):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=copy)
            except zmq.Again:
                return
            try:
                handler(frames)
            except Exception:  # a bug in a handler must not take the broker down
                log.exception("internal error while handling a message; broker keeps running")

    def _after_commit(self, sock: zmq.Socket, identity: bytes, command: Command, body: Any,
                      payload: Any = None) -> None:
        """Send a message that promises durability (ACCEPTED, RESULT, JOB) once the journal holds its cause."""
        if self.journal is None:
            self._deliver(sock, identity, command, body, payload)
        else:
            self._outbox.append((sock, identity, command, body, payload))

    def _deliver(self, sock: zmq.Socket, identity: bytes, command: Command, body: Any, payload: Any) -> None:
        if sock is self.frontend:
            self._to_client(identity, command, body, payload)
        else:
            self._to_worker(identity, command, body)

    def _commit(self) -> None:
        """Group commit: write what changed, then send what waited for it."""
        if self.journal is not None:
            self.journal.flush()
        if self._outbox:
            outbox, self._outbox = self._outbox, []
            for sock, identity, command, body, payload in outbox:
                self._deliver(sock, identity, command, body, payload)

    def close(self) -> None:
        self.frontend.close(linger=200)
        self.backend.close(linger=200)
        if self.journal is not None:
            self.journal.close()

    # ---- client side -----------------------------------------------------------------------------

    def _on_client_frames(self, frames: list[Any]) -> None:
        identity = frames[0]
        try:
            message = decode(frames[1:], side=Side.CLIENT, to_broker=True)
        except ProtocolError as exc:
            log.warning("client %r: malformed message: %s", identity, exc)
            self._client_error(identity, ErrorCode.PROTOCOL, str(exc), job_id=exc.job_id, req_id=exc.req_id)
            return
        self._client_handlers[message.command](identity, message.body)

    def _on_submit(self, identity: bytes, req: Submit) -> None:
        job = self.jobs.get(req.job_id)
        if job is not None:
            self._attach(identity, job)
            return
        if self.draining:
            self._client_error(identity, ErrorCode.SHUTTING_DOWN, "broker is draining", job_id=req.job_id)
            return
        if len(req.text) > self.settings.max_text_chars:
            self._client_error(identity, ErrorCode.BAD_REQUEST,
                               f"text has {len(req.text)} characters; the limit is {self.settings.max_text_chars}",
                               job_id=req.job_id)
            return
        if len(self.queue) >= self.settings.max_queue:
            self._client_error(identity, ErrorCode.QUEUE_FULL, f"queue is full ({self.settings.max_queue} jobs)",
                               job_id=req.job_id)
            return
        now = time.monotonic()
        job = Job(request=req, priority=Priority(req.priority), model=req.model or self.settings.default_model,
                  accepted_at=now, accepted_wall=time.time(),
                  deadline=now + req.deadline_ms / 1000 if req.deadline_ms else None)
        if self._answer_from_cache(identity, job, now):
            return
        job.subscribers.add(identity)
        self.jobs.add(job)
        self.queue.push(job)
        if job.deadline is not None:
            heapq.heappush(self._deadlines, (job.deadline, job.job_id))
        self._dirty = True
        log.debug("job %s accepted (priority %s, model %s, %d chars)", job.job_id, job.priority.value,
                  job.model, len(req.text))
        if self.journal is not None:
            self.journal.record(job, new=True)
        accepted = wire.accepted(job.job_id, job.state, len(self.queue), False)
        self._after_commit(self.frontend, identity, Command.ACCEPTED, accepted)

    def _answer_from_cache(self, identity: bytes, job: Job, now: float) -> bool:
        if self.cache is None or job.request.cache is False:
            return False
        key = cache_key(job.request.text, job.request.speaker, job.request.voice, job.model)
        hit = self.cache.get(key) if key else None
        if hit is None:
            return False
        meta, pcm = hit
        try:
            job.result = wire.result(job.job_id, 1, "cache", meta["engine"], meta["model"], meta["sample_rate"],
                                     meta["channels"], meta["sample_format"], len(pcm) // (2 * meta["channels"]),
                                     0, 0, int((time.monotonic() - now) * 1000), True)
        except (KeyError, TypeError, ZeroDivisionError):
            log.warning("job %s: result cache entry %s has bad metadata; ignored", job.job_id, key)
            return False
        job.state, job.audio, job.cached, job.attempt, job.started_at = JobState.DONE, pcm, True, 1, now
        self.jobs.add(job)
        self._finish(job, now)
        log.debug("job %s answered from the result cache", job.job_id)
        self._to_client(identity, Command.RESULT, job.result, pcm)
        return True

    def _finish(self, job: Job, now: float) -> None:
        self.jobs.finish(job, now)
        if self.journal is not None:
            self.journal.record(job, new=job.cached)  # a cache hit was never journaled

    def _attach(self, identity: bytes, job: Job) -> None:
        """Idempotent resubmission: join the existing job, or get its final answer again.

        A job that ended with a retryable error (shutting_down, no_workers...) is not a final answer: the
        resubmission runs it again, so a client's retry works after a drain or a restart.
        """
        if job.state.finished and job.error is not None and job.error.retryable and not self.draining:
            code = job.error.code
            self._reopen(job)
            log.info("job %s resubmitted after a retryable %s; queued again", job.job_id, code)
        if job.state is JobState.DONE and job.result:
            self._to_client(identity, Command.RESULT, job.result, job.audio)
        elif job.state.finished and job.error is not None:
            self._to_client(identity, Command.ERROR, Error(job_id=job.job_id, code=job.error.code,
                                                           message=job.error.message, retryable=job.error.retryable))
        else:
            job.subscribers.add(identity)
            self._to_client(identity, Command.ACCEPTED, wire.accepted(job.job_id, job.state, len(self.queue), True))
        log.debug("job %s: resubmission attached (state %s)", job.job_id, job.state.value)

    def _on_cancel(self, identity: bytes, req: CancelJob) -> None:
        job = self.jobs.get(req.job_id)
        if job is None:
            self._client_error(identity, ErrorCode.NOT_FOUND, f"no job {req.job_id}", job_id=req.job_id)
            return
        if job.state.finished:
            return
        job.subscribers.add(identity)
        self._fail(job, ErrorCode.CANCELLED, "cancelled by a client", cancel_reason="cancelled")

    def _on_job_status(self, identity: bytes, req: JobStatusRequest) -> None:
        job = self.jobs.get(req.job_id)
        if job is None:
            self._client_error(identity, ErrorCode.NOT_FOUND, f"no job {req.job_id}", req_id=req.req_id)
            return
        self._to_client(identity, Command.JOB_STATUS_REPLY,
                        JobStatusReply(req_id=req.req_id, job=job.view(time.monotonic())))

    def _on_broker_status(self, identity: bytes, req: Request) -> None:
        self._to_client(identity, Command.BROKER_STATUS_REPLY,
                        BrokerStatusReply(req_id=req.req_id, status=self.status_view()))

    def _on_ping(self, identity: bytes, req: Request) -> None:
        self._to_client(identity, Command.PONG,
                        Pong(req_id=req.req_id, broker_id=self.broker_id, time_ms=int(time.time() * 1000)))

    def _on_reload(self, identity: bytes, req: Reload) -> None:
        told = 0
        for worker in self.workers:
            if worker.serves(req.model):
                told += self._to_worker(worker.identity, Command.B_RELOAD, WorkerReload(options=req.options))
        if self.cache is not None:
            self.cache.clear()  # entries came from the old checkpoint
        log.info("reload (model %s) sent to %d workers; result cache cleared", req.model, told)
        self._to_client(identity, Command.RELOAD_REPLY, ReloadReply(req_id=req.req_id, workers=told))

    def _on_jobs(self, identity: bytes, req: JobsRequest) -> None:
        now = time.monotonic()
        views = [job.view(now) for job in self.jobs.recent(req.state, req.limit)]
        self._to_client(identity, Command.JOBS_REPLY, JobsReply(req_id=req.req_id, jobs=views))

    def _on_retry(self, identity: bytes, req: RetryJob) -> None:
        job = self.jobs.get(req.job_id)
        if job is None:
            self._client_error(identity, ErrorCode.NOT_FOUND, f"no job {req.job_id}", req_id=req.req_id)
            return
        if job.state not in (JobState.FAILED, JobState.CANCELLED):
            self._client_error(identity, ErrorCode.BAD_REQUEST,
                               f"job {req.job_id} is {job.state.value}; only failed or cancelled jobs can be retried",
                               req_id=req.req_id)
            return
        self._reopen(job)
        log.info("job %s retried by a client", job.job_id)
        self._to_client(identity, Command.JOB_STATUS_REPLY,
                        JobStatusReply(req_id=req.req_id, job=job.view(time.monotonic())))

    def _reopen(self, job: Job) -> None:
        """Put a finished job back in the queue as a fresh job with the same id (attempts start again)."""
        now = time.monotonic()
        job.state, job.attempt, job.error, job.worker_id, job.worker_identity = JobState.QUEUED, 0, None, None, None
        job.workers_tried, job.started_at, job.finished_at = [], None, None
        job.accepted_at, job.accepted_wall = now, time.time()
        job.deadline = now + job.request.deadline_ms / 1000 if job.request.deadline_ms else None
        if job.deadline is not None:
            heapq.heappush(self._deadlines, (job.deadline, job.job_id))
        self.jobs.reopen(job)
        self.queue.push(job)
        self._dirty = True
        if self.journal is not None:
            self.journal.record(job, new=True)

    def status_view(self) -> StatusView:
        now = time.monotonic()
        running = sum(1 for w in self.workers for _ in w.held_jobs())
        return StatusView(
            broker_id=self.broker_id,
            version=__version__,
            uptime_s=round(now - self.started_at, 3),
            draining=self.draining,
            queue={"depth": len(self.queue), "max": self.settings.max_queue,
                   "by_priority": self.queue.depth_by_priority()},
            jobs={"running": running, "live": self.jobs.live_count, "done": self.jobs.done_total,
                  "failed": self.jobs.failed_total, "retained": self.jobs.retained_count,
                  "retained_bytes": self.jobs.retained_bytes,
                  "journal": str(self.journal.path) if self.journal else None,
                  "journal_commits": self.journal.commits if self.journal else 0,
                  "cache": self.cache.stats() if self.cache else None},
            workers=[w.view(now) for w in self.workers],
        )

    # ---- worker side -----------------------------------------------------------------------------

    def _on_worker_frames(self, frames: list[Any]) -> None:
        identity = frames[0].bytes
        worker = self.workers.get(identity)
        now = time.monotonic()
        if worker is not None:
            worker.last_seen = now
        try:
            message = decode(frames[1:], side=Side.WORKER, to_broker=True)
        except ProtocolError as exc:
            log.warning("worker %s: malformed message dropped: %s",
                        worker.worker_id if worker else repr(identity), exc)
            return
        command = message.command
        body: Any = message.body  # decode() validated it as the body type of `command`
        if command is Command.W_READY:
            self._on_ready(identity, body, now)
            return
        if worker is None:
            if command is not Command.W_DISCONNECT:
                log.info("unknown worker %r sent %s: asking it to re-register", identity, command.name)
                self._to_worker(identity, Command.B_DISCONNECT, Disconnect(reason="unknown worker; send READY"))
            return
        if command is Command.W_HEARTBEAT:
            worker.update_stats(body.stats)
        elif command is Command.W_RESULT:
            self._on_result(worker, body, message.payload, now)
        elif command is Command.W_PARTIAL:
            self._on_partial(worker, body, message.payload)
        elif command is Command.W_FAIL:
            self._on_fail(worker, body)
        elif command is Command.W_DISCONNECT:
            log.info("worker %s leaves: %s", worker.worker_id, body.reason)
            self._remove_worker(worker, "left")

    def _on_ready(self, identity: bytes, ready: Ready, now: float) -> None:
        old = self.workers.get(identity)
        if old is not None:
            log.warning("worker %s sent READY again; resetting it", old.worker_id)
            self._remove_worker(old, "re-registered")
        if self.draining:
            self._to_worker(identity, Command.B_DISCONNECT, Disconnect(reason="broker is draining"))
            return
        self.workers.add(WorkerRecord(identity=identity, ready=ready, registered_at=now, last_seen=now))
        self._dirty = True
        log.info("worker %s ready: %s/%s on %s (%s pid %d), capacity %d", ready.worker_id, ready.engine,
                 ready.model, ready.device, ready.host, ready.pid, ready.capacity)

    def _lease_job(self, worker: WorkerRecord, job_id: str, attempt: int) -> Optional[Job]:
        """The job if `worker` holds this exact live lease; else None (late or foreign answer)."""
        lease = (job_id, attempt)
        if lease not in worker.leases:
            log.warning("worker %s answered for job %s attempt %d it does not hold; dropped",
                        worker.worker_id, job_id, attempt)
            return None
        job = worker.leases[lease]
        if job is None:
            log.info("worker %s answered for revoked job %s attempt %d; dropped, slot freed",
                     worker.worker_id, job_id, attempt)
            self.workers.release(worker, lease)
            self._dirty = True
        return job

    def _on_result(self, worker: WorkerRecord, body: WorkerResult, payload: Any, now: float) -> None:
        job = self._lease_job(worker, body.job_id, body.attempt)
        if job is None:
            return
        self.workers.release(worker, (body.job_id, body.attempt))
        worker.jobs_done += 1
        self._dirty = True
        job.state = JobState.DONE
        job.audio = payload
        num_samples = job.audio_bytes // (2 * body.channels)
        job.result = wire.result(
            job.job_id, body.attempt, worker.worker_id, worker.ready.engine, worker.ready.model, body.sample_rate,
            body.channels, body.sample_format, num_samples, body.gen_time_ms,
            int(((job.started_at or now) - job.accepted_at) * 1000), int((now - job.accepted_at) * 1000),
        )
        for identity in job.subscribers:
            self._after_commit(self.frontend, identity, Command.RESULT, job.result, payload)
        log.debug("job %s done by %s (attempt %d, %d samples)", job.job_id, worker.worker_id, body.attempt,
                  num_samples)
        self._finish(job, now)
        wanted = job.request.cache
        if self.cache is not None and (wanted or (wanted is None and body.deterministic)):
            key = cache_key(job.request.text, job.request.speaker, job.request.voice, job.model)
            if key:
                meta = {"engine": worker.ready.engine, "model": worker.ready.model, "sample_rate": body.sample_rate,
                        "channels": body.channels, "sample_format": body.sample_format}
                self.cache.put(key, meta, job.audio_data())

    def _on_partial(self, worker: WorkerRecord, body: Partial, payload: Any) -> None:
        job = self._lease_job(worker, body.job_id, body.attempt)
        if job is None or not job.request.stream:
            return
        for identity in job.subscribers:
            self._to_client(identity, Command.PARTIAL, body, payload)

    def _on_fail(self, worker: WorkerRecord, body: Fail) -> None:
        job = self._lease_job(worker, body.job_id, body.attempt)
        if job is None:
            return
        lease = (body.job_id, body.attempt)
        self.workers.release(worker, lease)
        worker.jobs_failed += 1
        self._dirty = True
        log.info("job %s failed on worker %s (attempt %d): %s: %s", job.job_id, worker.worker_id,
                 body.attempt, body.code, body.message)
        if body.retryable:
            self._requeue(job, f"worker {worker.worker_id} failed: {body.code}: {body.message}")
        else:
            code = _known_code(body.code)
            self._fail(job, code, body.message or body.code, worker_code=body.code)

    def _remove_worker(self, worker: WorkerRecord, why: str) -> None:
        self.workers.remove(worker.identity)
        for job in worker.held_jobs():
            self._requeue(job, f"worker {worker.worker_id} {why} while running it")
        self._dirty = True

    # ---- job life cycle --------------------------------------------------------------------------

    def _requeue(self, job: Job, why: str) -> None:
        job.worker_id = None
        job.worker_identity = None
        job.lease_deadline = None
        if job.attempt >= self.settings.max_attempts:
            self._fail(job, ErrorCode.MAX_ATTEMPTS,
                       f"gave up after {job.attempt} attempts (workers: {', '.join(job.workers_tried)}); "
                       f"last: {why}")
            return
        log.info("job %s requeued after attempt %d: %s", job.job_id, job.attempt, why)
        job.state = JobState.QUEUED
        self.queue.push(job, front=True)
        self._dirty = True

    def _fail(self, job: Job, code: ErrorCode, message: str, *, cancel_reason: str = "",
              worker_code: str = "") -> None:
        """Finish a job with an error: drop it from the queue or revoke its lease, tell its clients."""
        now = time.monotonic()
        if job.state is JobState.QUEUED:
            self.queue.remove(job)
        elif job.state is JobState.RUNNING and job.worker_identity is not None:
            worker = self.workers.get(job.worker_identity)
            lease = (job.job_id, job.attempt)
            if worker is not None and worker.leases.get(lease) is job:
                self.workers.revoke(worker, lease)
                self._to_worker(worker.identity, Command.B_CANCEL,
                                CancelLease(job_id=job.job_id, attempt=job.attempt, reason=cancel_reason or code.value))
        job.state = JobState.CANCELLED if code is ErrorCode.CANCELLED else JobState.FAILED
        wire_code = worker_code or code.value
        job.error = ErrorInfo(code=wire_code, message=message[:4096], retryable=code.retryable)
        error = Error(job_id=job.job_id, code=wire_code, message=message[:4096], retryable=code.retryable)
        for identity in job.subscribers:
            self._to_client(identity, Command.ERROR, error)
        log.info("job %s %s: %s: %s", job.job_id, job.state.value, wire_code, message)
        self._finish(job, now)

    def _dispatch(self) -> None:
        """Give queued jobs to free worker slots, least recently used workers first.

        Leases are journaled before their JOB goes out (group commit at the end of the loop's turn), so after
        a crash the attempt count is never behind.
        """
        self._dirty = False
        if not len(self.queue):
            return
        now = time.monotonic()
        settings = self.settings
        for worker in self.workers.free_workers():
            while worker.free_slots > 0:
                job = self.queue.take_for(worker.served_keys, warm=worker.warm, now=now,
                                          sticky_max_wait_s=settings.sticky_max_wait_s)
                if job is None:
                    break
                # A worker whose socket is gone is declared dead later and the job requeued.
                self._after_commit(self.backend, worker.identity, Command.B_JOB, self._start(worker, job, now))
            if not len(self.queue):
                break

    def _start(self, worker: WorkerRecord, job: Job, now: float) -> bytes:
        """Lease `job` to `worker`; returns the packed JOB body to send."""
        job.attempt += 1
        job.state = JobState.RUNNING
        job.worker_id = worker.worker_id
        job.worker_identity = worker.identity
        job.started_at = job.started_at or now
        job.workers_tried.append(worker.worker_id)
        limit_s = job.request.timeout_ms / 1000 if job.request.timeout_ms else self.settings.job_timeout_s
        if job.deadline is not None:
            limit_s = min(limit_s, max(job.deadline - now, 0.001))
        job.lease_deadline = now + limit_s
        heapq.heappush(self._lease_deadlines, (job.lease_deadline, job.job_id, job.attempt))
        self.workers.lease(worker, (job.job_id, job.attempt), job)
        if self.journal is not None:
            self.journal.record(job)  # attempts survive a restart, so poison jobs still end
        req = job.request
        log.debug("job %s attempt %d -> worker %s", job.job_id, job.attempt, worker.worker_id)
        return wire.job(job.job_id, job.attempt, req.text, req.speaker, job.model, req.voice, req.stream,
                        int(limit_s * 1000))

    # ---- timers ----------------------------------------------------------------------------------

    def _tick(self, now: float) -> None:
        settings = self.settings
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + settings.heartbeat_interval_s
            for worker in self.workers:
                self._send(self.backend, worker.identity, _B_HEARTBEAT_FRAMES)
        dead_after = settings.heartbeat_interval_s * settings.heartbeat_liveness
        for worker in self.workers:
            if now - worker.last_seen > dead_after:
                log.warning("worker %s silent for %.1fs: declared dead (%d leases)", worker.worker_id,
                            now - worker.last_seen, len(worker.leases))
                self._remove_worker(worker, "died")
        self._expire_deadlines(now)
        self._expire_leases(now)
        if settings.unroutable_timeout_s > 0:
            self._fail_unroutable(now)
        self.jobs.expire(now)
        if self.journal is not None:
            if now >= self._next_purge:
                self._next_purge = now + _PURGE_EVERY_S
                self.journal.forget_finished_before(time.time() - settings.result_ttl_s)

    def _expire_deadlines(self, now: float) -> None:
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            _, job_id = heapq.heappop(heap)
            job = self.jobs.get(job_id)
            if job is not None and not job.state.finished:
                self._fail(job, ErrorCode.DEADLINE_EXCEEDED,
                           f"deadline of {job.request.deadline_ms} ms passed (attempt {job.attempt})",
                           cancel_reason="deadline")

    def _expire_leases(self, now: float) -> None:
        heap = self._lease_deadlines
        while heap and heap[0][0] <= now:
            _, job_id, attempt = heapq.heappop(heap)
            job = self.jobs.get(job_id)
            if job is None or job.state is not JobState.RUNNING or job.attempt != attempt:
                continue
            worker = self.workers.get(job.worker_identity) if job.worker_identity else None
            if worker is not None:
                self.workers.revoke(worker, (job_id, attempt))
                self._to_worker(worker.identity, Command.B_CANCEL,
                                CancelLease(job_id=job_id, attempt=attempt, reason="attempt timed out"))
            self._requeue(job, f"attempt {attempt} ran past its time limit on worker {job.worker_id}")

    def _fail_unroutable(self, now: float) -> None:
        for key in self.queue.keys():
            if self.workers.serves_key(key):
                self._unroutable_since.pop(key, None)
                continue
            since = self._unroutable_since.setdefault(key, now)
            if now - since >= self.settings.unroutable_timeout_s:
                for job in list(self.queue.jobs_for_key(key)):
                    self._fail(job, ErrorCode.NO_WORKERS, f"no connected worker serves model {key!r}")
                self._unroutable_since.pop(key, None)

    # ---- draining and shutdown -------------------------------------------------------------------

    def _drain_finished(self, now: float) -> bool:
        if self.jobs.live_count == 0:
            log.info("drained: every job finished")
            return True
        if now < self.drain_until:
            return False
        log.warning("drain grace over: %d jobs left get shutting_down", self.jobs.live_count)
        for job in self.jobs.live():
            self._fail(job, ErrorCode.SHUTTING_DOWN, "broker shut down before the job finished; resubmit")
        return True

    def _shutdown(self) -> None:
        for worker in self.workers:
            self._to_worker(worker.identity, Command.B_DISCONNECT, Disconnect(reason="broker shutting down"))
        self.close()
        log.info("broker %s stopped", self.broker_id)


def _known_code(code: str) -> ErrorCode:
    try:
        return ErrorCode(code)
    except ValueError:
        return ErrorCode.ENGINE_ERROR
