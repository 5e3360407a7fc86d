"""The client's engine room: one DEALER socket owned by one background I/O thread.

ZeroMQ sockets are not thread-safe, so callers never touch the socket. They put a command on a thread-safe
queue and nudge the I/O thread through an inproc PUSH/PULL pair; the I/O thread sends, receives and routes
every reply to a concurrent.futures.Future by job_id or req_id. The same thread pings the broker, notices a
restart (a new broker_id) and resubmits unfinished jobs under their own job_id, resubmits jobs that went
quiet, retries retryable errors with backoff and enforces each call's timeout. A job's Future is completed
exactly once; late duplicates are dropped.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import queue
import secrets
import threading
import time
from concurrent.futures import Future
from typing import Any, Optional, Union

import zmq

from tts_protocol import Command, ErrorCode, ProtocolError, Side, decode, encode
from tts_protocol.messages import Accepted, Error, Partial, Pong, Result, Submit

from tts_client.errors import (
    BrokerUnavailable,
    ClientClosed,
    ClientTimeout,
    InvalidRequest,
    JobCancelled,
    JobTimeout,
    job_error,
    request_error,
)
from tts_client.pending import ChunkSink, PendingJob, PendingRequest, settle
from tts_client.results import SynthesisResult
from tts_client.settings import ClientSettings

log = logging.getLogger(__name__)

_TICK_S = 0.05
_MAX_RECV_BATCH = 500
_PING_PREFIX = "ping-"
_RETRY_PREFIX = "retry-"
_REPLY_COMMANDS = frozenset({
    Command.PONG, Command.JOB_STATUS_REPLY, Command.BROKER_STATUS_REPLY, Command.RELOAD_REPLY, Command.JOBS_REPLY,
})


@dataclasses.dataclass(frozen=True, slots=True)
class _SubmitCmd:
    request: Submit
    future: Future
    timeout_s: float
    sink: Optional[ChunkSink]


@dataclasses.dataclass(frozen=True, slots=True)
class _CancelCmd:
    job_id: str


@dataclasses.dataclass(frozen=True, slots=True)
class _RequestCmd:
    command: Command
    body: dict[str, Any]
    future: Future
    timeout_s: float


_Cmd = Union[_SubmitCmd, _CancelCmd, _RequestCmd, None]  # None = close


class ClientCore:
    """Owns the socket and the I/O thread; shared by TtsClient and AsyncTtsClient."""

    def __init__(self, settings: ClientSettings) -> None:
        self.settings = settings
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SNDHWM, 100_000)
        self._sock.setsockopt(zmq.RCVHWM, 100_000)
        self._sock.connect(settings.broker_url)
        wake_addr = f"inproc://tts-client-wake-{secrets.token_hex(8)}"
        self._wake_rx = self._ctx.socket(zmq.PULL)
        self._wake_rx.bind(wake_addr)
        self._wake_tx = self._ctx.socket(zmq.PUSH)
        self._wake_tx.setsockopt(zmq.LINGER, 0)
        self._wake_tx.connect(wake_addr)
        self._wake_lock = threading.Lock()
        self._commands: queue.SimpleQueue[_Cmd] = queue.SimpleQueue()
        self._closed = False
        self._close_lock = threading.Lock()

        # Everything below belongs to the I/O thread.
        self._jobs: dict[str, PendingJob] = {}
        self._requests: dict[str, PendingRequest] = {}
        self._outbox: collections.deque[list[bytes]] = collections.deque()
        self._broker_id: Optional[str] = None
        self._last_broker_msg: Optional[float] = None
        self._next_ping = 0.0
        self._ping_seq = itertools.count(1)

        self._thread = threading.Thread(target=self._run, name="tts-client-io", daemon=True)
        self._thread.start()

    # ---- caller side (any thread) ---------------------------------------------------------------------

    @property
    def broker_id(self) -> Optional[str]:
        """The broker_id of the last PONG (None before the first one)."""
        return self._broker_id

    @property
    def closed(self) -> bool:
        return self._closed

    def submit(self, request: Submit, *, timeout_s: float, sink: Optional[ChunkSink] = None) -> Future:
        """Queue a job; the Future ends with a SynthesisResult or an exception. Cancelling it cancels the job."""
        future: Future = Future()
        self._put(_SubmitCmd(request, future, timeout_s, sink))
        job_id = request.job_id
        future.add_done_callback(lambda f: self._put_quietly(_CancelCmd(job_id)) if f.cancelled() else None)
        return future

    def cancel(self, job_id: str) -> None:
        """Ask the broker to cancel a job; its Future then ends with JobCancelled."""
        self._put(_CancelCmd(job_id))

    def request(self, command: Command, body: dict[str, Any], *, timeout_s: float) -> Future:
        """Send a request with a fresh req_id; the Future ends with the reply's body."""
        future: Future = Future()
        self._put(_RequestCmd(command, body, future, timeout_s))
        return future

    def close(self) -> None:
        """Stop the I/O thread, fail whatever is pending with ClientClosed, free the sockets. Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            self._commands.put(None)
        self._wake()
        if threading.current_thread() is self._thread:
            return  # called from a callback on the I/O thread: it stops after this round
        self._thread.join(10)
        with self._wake_lock:
            self._wake_tx.close(0)
        if not self._thread.is_alive():
            self._ctx.term()

    def _put(self, cmd: _Cmd) -> None:
        # Under the lock so that no command lands behind the close marker, where nobody would answer it.
        with self._close_lock:
            if self._closed:
                raise ClientClosed("the client is closed")
            self._commands.put(cmd)
        self._wake()

    def _put_quietly(self, cmd: _Cmd) -> None:
        try:
            self._put(cmd)
        except ClientClosed:
            pass

    def _wake(self) -> None:
        with self._wake_lock:
            if self._wake_tx.closed:
                return
            try:
                self._wake_tx.send(b"", zmq.NOBLOCK)
            except zmq.Again:
                pass  # plenty of wake-ups already queued; the I/O thread drains the command queue anyway

    # ---- I/O thread -----------------------------------------------------------------------------------

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        poller.register(self._wake_rx, zmq.POLLIN)
        next_tick = 0.0
        try:
            while True:
                poller.modify(self._sock, zmq.POLLIN | (zmq.POLLOUT if self._outbox else 0))
                events = dict(poller.poll(int(_TICK_S * 1000)))
                if self._wake_rx in events:
                    self._drain_wake()
                if not self._drain_commands():
                    break
                if events.get(self._sock, 0) & zmq.POLLIN:
                    self._receive()
                self._flush()
                now = time.monotonic()
                if now >= next_tick:
                    self._tick(now)
                    next_tick = now + _TICK_S
        except Exception:
            log.exception("client I/O thread failed; failing every pending call")
        finally:
            self._fail_all(ClientClosed("the client is closed"))
            self._sock.close(0)
            self._wake_rx.close(0)

    def _drain_wake(self) -> None:
        while True:
            try:
                self._wake_rx.recv(zmq.NOBLOCK)
            except zmq.Again:
                return

    def _drain_commands(self) -> bool:
        """Handle queued commands; False once close was asked for."""
        while True:
            try:
                cmd = self._commands.get_nowait()
            except queue.Empty:
                return True
            if cmd is None:
                return False
            try:
                if isinstance(cmd, _SubmitCmd):
                    self._start_job(cmd)
                elif isinstance(cmd, _CancelCmd):
                    self._cancel_job(cmd.job_id)
                else:
                    self._start_request(cmd)
            except Exception as exc:  # never let one bad call stop the thread
                log.exception("client command failed")
                if not isinstance(cmd, _CancelCmd):
                    settle(cmd.future, error=InvalidRequest(str(exc)))

    def _start_job(self, cmd: _SubmitCmd) -> None:
        job_id = cmd.request.job_id
        if cmd.future.done():
            return
        if job_id in self._jobs:
            settle(cmd.future, error=InvalidRequest(f"job {job_id} is already in flight in this client"))
            return
        now = time.monotonic()
        deadline = now + cmd.timeout_s if cmd.timeout_s > 0 else None
        job = PendingJob(request=cmd.request, future=cmd.future, sink=cmd.sink, deadline=deadline, last_heard=now,
                         backoff_s=self.settings.retry_backoff_initial_s)
        self._jobs[job_id] = job
        self._send_submit(job, now)

    def _send_submit(self, job: PendingJob, now: float) -> None:
        job.retry_at = None
        job.last_heard = now
        if job.last_error is not None and job.last_error.retryable:
            # The broker may hold the job as failed with that retryable error (a journal keeps it across a
            # restart), and a plain SUBMIT would only be answered with the same error. RETRY requeues such
            # a job (or fails harmlessly with not_found); the SUBMIT behind it then attaches or creates it.
            self._send(encode(Command.RETRY, {"req_id": f"{_RETRY_PREFIX}{next(self._ping_seq)}",
                                              "job_id": job.job_id}))
        self._send(encode(Command.SUBMIT, job.request))

    def _cancel_job(self, job_id: str) -> None:
        job = self._jobs.get(job_id)
        if job is not None:
            job.cancel_requested = True
            if not job.heard_any or job.retry_at is not None:
                # The broker may never have seen it; settle locally too (a later ERROR is then a duplicate).
                self._jobs.pop(job_id)
                settle(job.future, error=JobCancelled(ErrorCode.CANCELLED.value, "cancelled by this client",
                                                      job_id=job_id))
        self._send(encode(Command.CANCEL, {"job_id": job_id}))

    def _start_request(self, cmd: _RequestCmd) -> None:
        req_id = f"req-{secrets.token_hex(8)}"
        frames = encode(cmd.command, {"req_id": req_id, **cmd.body})
        self._requests[req_id] = PendingRequest(cmd.future, time.monotonic() + cmd.timeout_s, cmd.command.name)
        self._send(frames)

    def _send(self, frames: list[bytes]) -> None:
        if not self._outbox:
            try:
                self._sock.send_multipart(frames, zmq.NOBLOCK)
                return
            except zmq.Again:
                pass
        self._outbox.append(frames)

    def _flush(self) -> None:
        while self._outbox:
            try:
                self._sock.send_multipart(self._outbox[0], zmq.NOBLOCK)
            except zmq.Again:
                return
            self._outbox.popleft()

    def _receive(self) -> None:
        for _ in range(_MAX_RECV_BATCH):
            try:
                frames = self._sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                msg = decode(frames, side=Side.CLIENT, to_broker=False)
            except ProtocolError as exc:
                log.warning("dropped malformed message from broker: %s (job_id=%s req_id=%s)",
                            exc, exc.job_id, exc.req_id)
                continue
            self._last_broker_msg = time.monotonic()
            try:
                self._dispatch(msg.command, msg.body, msg.payload)
            except Exception:
                log.exception("failed to handle %s from broker", msg.command.name)

    def _dispatch(self, command: Command, body: Any, payload: Optional[bytes]) -> None:
        if command is Command.RESULT:
            self._on_result(body, payload or b"")
        elif command is Command.PARTIAL:
            self._on_partial(body, payload or b"")
        elif command is Command.ACCEPTED:
            self._on_accepted(body)
        elif command is Command.ERROR:
            self._on_error(body)
        elif command in _REPLY_COMMANDS:
            if command is Command.PONG:
                self._on_pong(body)
            request = self._requests.pop(body.req_id, None)
            if request is not None:
                settle(request.future, result=body)

    def _on_accepted(self, body: Accepted) -> None:
        job = self._jobs.get(body.job_id)
        if job is None:
            return
        job.heard_any = True
        job.last_heard = time.monotonic()
        job.last_error = None
        job.backoff_s = self.settings.retry_backoff_initial_s
        log.debug("job %s accepted: state=%s queue_depth=%d duplicate=%s", body.job_id, body.state.value,
                  body.queue_depth, body.duplicate)

    def _on_partial(self, body: Partial, payload: bytes) -> None:
        job = self._jobs.get(body.job_id)
        if job is None:
            return
        job.heard_any = True
        job.last_heard = time.monotonic()
        chunk = job.accept_partial(body, payload)
        if chunk is not None and job.sink is not None:
            self._deliver(job, chunk)

    def _on_result(self, body: Result, payload: bytes) -> None:
        job = self._jobs.pop(body.job_id, None)
        if job is None:
            log.debug("job %s: duplicate or unknown RESULT dropped", body.job_id)
            return
        tail = job.tail_chunk(body, payload)
        if tail is not None and job.sink is not None:
            self._deliver(job, tail)
        settle(job.future, result=SynthesisResult.from_message(body, payload))

    def _on_error(self, body: Error) -> None:
        if body.req_id is not None and body.req_id in self._requests:
            request = self._requests.pop(body.req_id)
            settle(request.future, error=request_error(body.code, body.message, retryable=body.retryable))
            return
        job = self._jobs.get(body.job_id) if body.job_id is not None else None
        if job is None:
            if body.job_id is None and body.req_id is None:
                log.warning("broker reported an error: %s %s", body.code, body.message)
            return
        job.heard_any = True
        job.last_heard = time.monotonic()
        if body.retryable and not job.cancel_requested:
            job.schedule_retry(time.monotonic(), body, self.settings.retry_backoff_max_s)
            log.debug("job %s: retryable %s, retrying in %.2fs", job.job_id, body.code,
                      (job.retry_at or 0) - time.monotonic())
            return
        self._jobs.pop(job.job_id)
        code = body.code
        if job.cancel_requested and code == ErrorCode.NOT_FOUND.value:
            code = ErrorCode.CANCELLED.value
        settle(job.future, error=job_error(code, body.message, retryable=body.retryable, job_id=job.job_id))

    def _on_pong(self, body: Pong) -> None:
        previous, self._broker_id = self._broker_id, body.broker_id
        if previous is not None and previous != body.broker_id:
            log.info("broker restarted (%s -> %s); resubmitting %d unfinished jobs", previous, body.broker_id,
                     len(self._jobs))
            now = time.monotonic()
            for job in self._jobs.values():
                if not job.cancel_requested:
                    job.forget_attempts()
                    self._send_submit(job, now)

    def _deliver(self, job: PendingJob, chunk: Any) -> None:
        try:
            job.sink(chunk)  # type: ignore[misc]
        except Exception:
            log.exception("job %s: stream consumer failed; stopping its stream", job.job_id)
            job.sink = None

    def _tick(self, now: float) -> None:
        if now >= self._next_ping:
            self._next_ping = now + self.settings.ping_interval_s
            self._send(encode(Command.PING, {"req_id": f"{_PING_PREFIX}{next(self._ping_seq)}"}))
        resubmit_after_s = self.settings.resubmit_after_s
        for job in list(self._jobs.values()):
            if job.future.done():  # cancelled by its caller; the done-callback queued a CANCEL
                self._jobs.pop(job.job_id, None)
            elif job.deadline is not None and now >= job.deadline:
                self._jobs.pop(job.job_id)
                self._time_out(job, now)
            elif job.cancel_requested:
                continue
            elif job.retry_at is not None:
                if now >= job.retry_at:
                    self._send_submit(job, now)
            elif now - job.last_heard >= resubmit_after_s:
                log.debug("job %s: nothing heard for %.1fs, resubmitting", job.job_id, now - job.last_heard)
                self._send_submit(job, now)
        for req_id, request in list(self._requests.items()):
            if now >= request.deadline:
                del self._requests[req_id]
                settle(request.future, error=self._timeout_error(f"no reply to {request.what}", now))

    def _time_out(self, job: PendingJob, now: float) -> None:
        if job.last_error is not None:
            err = job.last_error
            settle(job.future, error=job_error(err.code, f"{err.message} (gave up at the call's timeout)",
                                               retryable=err.retryable, job_id=job.job_id))
            return
        if job.heard_any and self.settings.cancel_on_timeout:
            self._send(encode(Command.CANCEL, {"job_id": job.job_id}))
        error = self._timeout_error(f"job {job.job_id} did not finish in time", now)
        if isinstance(error, JobTimeout):
            error.job_id = job.job_id
        settle(job.future, error=error)

    def _timeout_error(self, what: str, now: float) -> ClientTimeout:
        quiet_s = 3 * self.settings.ping_interval_s
        if self._last_broker_msg is None or now - self._last_broker_msg > quiet_s:
            return BrokerUnavailable(f"{what}: broker {self.settings.broker_url} is not answering")
        return JobTimeout(what)

    def _fail_all(self, error: Exception) -> None:
        for job in self._jobs.values():
            settle(job.future, error=error)
        for request in self._requests.values():
            settle(request.future, error=error)
        self._jobs.clear()
        self._requests.clear()
        while True:
            try:
                cmd = self._commands.get_nowait()
            except queue.Empty:
                return
            if isinstance(cmd, (_SubmitCmd, _RequestCmd)):
                settle(cmd.future, error=error)
