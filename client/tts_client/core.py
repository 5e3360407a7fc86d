"""The client's engine room: one DEALER socket owned by one background I/O thread.

ZeroMQ sockets are not thread-safe, so callers never touch the socket. They put a command on a thread-safe
queue and nudge the I/O thread through an inproc PUSH/PULL pair; the I/O thread sends, receives and routes
every reply to a concurrent.futures.Future by req_id, or by job_id through its JobTracker (tts_client.jobs),
which carries out the retry policy. The same thread pings the broker and tells the tracker when the broker
restarted (a new broker_id) or answers again after a silence, and enforces each request's timeout.

With an endpoint list (an active broker and its standbys) the socket connects to one endpoint at a time; when
that broker is lost (no PONG for BROKER_LOST_PINGS pings) the I/O thread closes it, dropping whatever it had
queued, and opens a socket to the next endpoint. The first PONG there carries a new broker_id, so every
unfinished job is resubmitted by job id (PROTOCOL.md section 9) to the broker that now answers.
"""

from __future__ import annotations

import collections
import dataclasses
import ipaddress
import logging
import queue
import secrets
import socket
import threading
import time
from concurrent.futures import Future
from typing import Any, Optional, Union

import zmq

from tts_protocol import Command, ProtocolError, Side, decode, encode
from tts_protocol.curve import HandshakeWatch
from tts_protocol.messages import (
    DrainWorker,
    Error,
    GetResult,
    JobsRequest,
    JobStatusRequest,
    ModelRequest,
    Pong,
    Reload,
    Request,
    RetryJob,
    StatusRequest,
    Submit,
)

from tts_client.errors import BrokerUnavailable, ClientClosed, ClientTimeout, InvalidRequest, JobTimeout, request_error
from tts_client.jobs import JobTracker
from tts_client.pending import AcceptedHook, ChunkSink, PendingRequest, settle
from tts_client.retry import BROKER_LOST_PINGS
from tts_client.settings import ClientSettings

log = logging.getLogger(__name__)

_TICK_S = 0.05
_MAX_RECV_BATCH = 500
_PING_PREFIX = "ping-"
_REPLY_COMMANDS = frozenset({
    Command.PONG, Command.JOB_STATUS_REPLY, Command.BROKER_STATUS_REPLY, Command.RELOAD_REPLY, Command.JOBS_REPLY,
    Command.ADMIN_REPLY,
})


@dataclasses.dataclass(frozen=True, slots=True)
class _SubmitCmd:
    request: Submit
    future: Future
    timeout_s: float
    sink: Optional[ChunkSink]
    on_accepted: Optional[AcceptedHook] = None


@dataclasses.dataclass(frozen=True, slots=True)
class _CancelCmd:
    job_id: str


RequestBody = Union[JobStatusRequest, JobsRequest, RetryJob, Request, StatusRequest, Reload, GetResult, DrainWorker,
                    ModelRequest]
"""A request's body: it names the req_id its reply will carry."""


def new_req_id() -> str:
    return f"req-{secrets.token_hex(8)}"


@dataclasses.dataclass(frozen=True, slots=True)
class _RequestCmd:
    command: Command
    body: RequestBody
    future: Future
    timeout_s: float


_Cmd = Union[_SubmitCmd, _CancelCmd, _RequestCmd, None]  # None = close


def _check_resolves(url: str) -> None:
    """BrokerUnavailable now for a tcp:// host name that does not resolve: ZeroMQ would retry it silently and
    the calls would end as "not answering"."""
    if not url.startswith("tcp://"):
        return
    host = url[len("tcp://"):].rpartition(":")[0].strip("[]")
    if not host or host == "*":
        return
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    try:
        socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) else str(exc)
        raise BrokerUnavailable(f"broker host {host!r} in {url} does not resolve ({reason})") from exc


class ClientCore:
    """Owns the socket and the I/O thread; shared by TtsClient and AsyncTtsClient."""

    def __init__(self, settings: ClientSettings) -> None:
        self.settings = settings
        self._ctx = zmq.Context()
        self._endpoints = settings.endpoints()
        self._endpoint_index = 0
        self._handshake: Optional[HandshakeWatch] = None
        self._gone: Optional[zmq.Socket] = None  # the handshake watch's monitor, read for closed connections (lists)
        try:
            for endpoint in self._endpoints:
                _check_resolves(endpoint)
        except BrokerUnavailable:
            self._ctx.term()
            raise
        self._sock = self._open_socket(self._endpoints[0])
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
        self._jobs = JobTracker(settings, self._send, self._timeout_error)
        self._requests: dict[str, PendingRequest] = {}
        self._outbox: collections.deque[list[bytes]] = collections.deque()
        self._broker_id: Optional[str] = None
        self._started = time.monotonic()
        self._last_broker_msg: Optional[float] = None
        self._last_pong = time.monotonic()
        self._broker_lost = False
        self._next_ping = 0.0
        self._ping_seq = 0

        self._thread = threading.Thread(target=self._run, name="tts-client-io", daemon=True)
        self._thread.start()

    def _open_socket(self, endpoint: str) -> zmq.Socket:
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 100_000)
        sock.setsockopt(zmq.RCVHWM, 100_000)
        keys = self.settings.curve_keys()
        if keys is not None:
            keys.apply(sock)
        # Watched with or without keys: a keyless client at a CURVE port learns so from its handshake.
        self._handshake = HandshakeWatch(sock, curve=keys is not None)
        try:
            sock.connect(endpoint)
        except zmq.ZMQError as exc:  # e.g. tcp://host without a port: say so instead of a ZMQError traceback
            sock.close(0)
            self._handshake.close()
            self._ctx.term()
            raise InvalidRequest(f"broker URL {endpoint!r} is not usable ({exc}); "
                                 "expected tcp://HOST:PORT") from exc
        if len(self._endpoints) > 1:
            # A broker that dies closes the connection: move on at once instead of after BROKER_LOST_PINGS pings.
            self._gone = self._handshake.socket
        return sock

    def _next_endpoint(self, poller: zmq.Poller) -> None:
        """I/O thread: the broker in use is lost; move to the next endpoint of the list with a new socket."""
        self._endpoint_index = (self._endpoint_index + 1) % len(self._endpoints)
        endpoint = self._endpoints[self._endpoint_index]
        log.info("broker lost; trying %s", endpoint)
        poller.unregister(self._sock)
        if self._gone is not None:
            poller.unregister(self._gone)
            self._gone = None
        if self._handshake is not None:
            self._handshake.close()
            self._handshake = None
        self._sock.close(0)
        self._outbox.clear()  # meant for the lost broker; unfinished jobs are resubmitted to the next one
        self._sock = self._open_socket(endpoint)
        poller.register(self._sock, zmq.POLLIN)
        if self._gone is not None:
            poller.register(self._gone, zmq.POLLIN)
        self._last_pong = time.monotonic()  # give this endpoint its own BROKER_LOST_PINGS pings
        self._next_ping = 0.0
        for request in self._requests.values():  # requests still waiting go to the broker that may answer
            if request.frames is not None:
                self._send(request.frames)

    # ---- caller side (any thread) ---------------------------------------------------------------------

    @property
    def broker_id(self) -> Optional[str]:
        """The broker_id of the last PONG (None before the first one)."""
        return self._broker_id

    @property
    def closed(self) -> bool:
        return self._closed

    def submit(self, request: Submit, *, timeout_s: float, sink: Optional[ChunkSink] = None,
               on_accepted: Optional[AcceptedHook] = None) -> Future:
        """Queue a job; the Future ends with a SynthesisResult or an exception. Cancelling it cancels the job.
        on_accepted runs once on the I/O thread when the broker first says it holds the job."""
        future: Future = Future()
        self._put(_SubmitCmd(request, future, timeout_s, sink, on_accepted))
        job_id = request.job_id
        future.add_done_callback(lambda f: self._put_quietly(_CancelCmd(job_id)) if f.cancelled() else None)
        return future

    def cancel(self, job_id: str) -> None:
        """Ask the broker to cancel a job; its Future then ends with JobCancelled."""
        self._put(_CancelCmd(job_id))

    def request(self, command: Command, body: RequestBody, *, timeout_s: float) -> Future:
        """Send a request (its body carries a fresh req_id, see new_req_id); the Future ends with the reply's
        body, or with the error the broker answered."""
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
        if self._gone is not None:
            poller.register(self._gone, zmq.POLLIN)
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
                if self._gone is not None and self._gone in events and self._disconnected():
                    self._next_endpoint(poller)
                self._flush()
                now = time.monotonic()
                if now >= next_tick:
                    self._tick(now)
                    next_tick = now + _TICK_S
                    if self._broker_lost and len(self._endpoints) > 1 and \
                            now - self._last_pong >= BROKER_LOST_PINGS * self.settings.ping_interval_s:
                        self._next_endpoint(poller)
        except Exception:
            log.exception("client I/O thread failed; failing every pending call")
        finally:
            self._fail_all(ClientClosed("the client is closed"))
            if self._handshake is not None:
                self._handshake.close()
            self._sock.close(0)
            self._wake_rx.close(0)

    def _disconnected(self) -> bool:
        """True if the connection to the broker in use closed (read from the handshake watch's monitor)."""
        return self._handshake is not None and self._handshake.take_disconnect()

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
                    self._jobs.start(cmd.request, cmd.future, cmd.timeout_s, cmd.sink, time.monotonic(),
                                    cmd.on_accepted)
                elif isinstance(cmd, _CancelCmd):
                    self._jobs.cancel(cmd.job_id)
                else:
                    self._start_request(cmd)
            except Exception as exc:  # never let one bad call stop the thread
                log.exception("client command failed")
                if not isinstance(cmd, _CancelCmd):
                    settle(cmd.future, error=InvalidRequest(str(exc)))

    def _start_request(self, cmd: _RequestCmd) -> None:
        frames = encode(cmd.command, cmd.body)
        now = time.monotonic()
        self._requests[cmd.body.req_id] = PendingRequest(cmd.future, now + cmd.timeout_s, cmd.command.name, now,
                                                         frames)
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
        now = time.monotonic()
        if command is Command.RESULT:
            self._jobs.on_result(body, payload or b"")
        elif command is Command.PARTIAL:
            self._jobs.on_partial(body, payload or b"", now)
        elif command is Command.ACCEPTED:
            self._jobs.on_accepted(body, now)
        elif command is Command.ERROR:
            self._on_error(body, now)
        elif command is Command.RESULT_REPLY:  # GET_RESULT's answer: the body and its audio
            request = self._requests.pop(body.req_id, None)
            if request is not None:
                settle(request.future, result=(body, payload or b""))
        elif command in _REPLY_COMMANDS:
            if command is Command.PONG:
                self._on_pong(body, now)
            request = self._requests.pop(body.req_id, None)
            if request is not None:
                settle(request.future, result=body)

    def _on_error(self, body: Error, now: float) -> None:
        if body.req_id is not None and body.req_id in self._requests:
            request = self._requests.pop(body.req_id)
            settle(request.future, error=request_error(body.code, body.message, retryable=body.retryable))
            return
        self._jobs.on_error(body, now)

    def _on_pong(self, body: Pong, now: float) -> None:
        """A new broker_id, or a PONG after a silence: jobs may have been lost; the tracker resubmits them."""
        previous, self._broker_id = self._broker_id, body.broker_id
        was_lost, self._broker_lost = self._broker_lost, False
        self._last_pong = now
        if previous is not None and previous != body.broker_id:
            self._jobs.resubmit_all(f"broker restarted ({previous} -> {body.broker_id})", now, new_broker=True)
        elif was_lost:
            self._jobs.resubmit_all(f"broker {self.settings.broker_url} answers again", now, new_broker=False)

    def _tick(self, now: float) -> None:
        failure = self._handshake.poll() if self._handshake is not None else None
        if failure is not None:
            self._handshake_failed(failure)
        interval_s = self.settings.ping_interval_s
        if now >= self._next_ping:
            self._next_ping = now + interval_s
            self._ping_seq += 1
            self._send(encode(Command.PING, Request(req_id=f"{_PING_PREFIX}{self._ping_seq}")))
        if not self._broker_lost and now - self._last_pong >= BROKER_LOST_PINGS * interval_s:
            self._broker_lost = True
            log.debug("no PONG from %s for %.1fs", self.settings.broker_url, now - self._last_pong)
        self._jobs.tick(now)
        self._fail_unanswered(now)
        for req_id, request in list(self._requests.items()):
            if now >= request.deadline:
                del self._requests[req_id]
                settle(request.future, error=self._timeout_error(f"no reply to {request.what}", now))

    def _fail_unanswered(self, now: float) -> None:
        """The connect timeout: calls waiting on a broker that has said nothing for connect_timeout_s (never,
        or not since it went silent) fail with BrokerUnavailable, independent of each call's own timeout."""
        limit_s = self.settings.connect_timeout_s
        if limit_s <= 0:
            return
        heard = self._last_broker_msg if self._last_broker_msg is not None else self._started
        if now - heard < limit_s:
            return
        silence = ("has never answered" if self._last_broker_msg is None
                   else f"has not answered for {now - heard:.0f}s")

        def error(what: str) -> BrokerUnavailable:
            return BrokerUnavailable(f"{what}: broker {self.settings.broker_url} {silence} "
                                     f"(connect timeout {limit_s:g}s, TTS_CLIENT_CONNECT_TIMEOUT_S)")

        self._jobs.fail_unanswered(now, heard, limit_s, error)
        for req_id, request in list(self._requests.items()):
            if now - max(request.started, heard) >= limit_s:
                del self._requests[req_id]
                settle(request.future, error=error(f"no reply to {request.what}"))

    def _handshake_failed(self, failure: str) -> None:
        """The handshake failed (refused key, CURVE mismatch, wrong broker key): every waiting call fails now,
        saying which (not "not answering" after its timeout)."""
        error = BrokerUnavailable(f"{failure} (broker {self.settings.broker_url})")
        self._jobs.fail_all(error)
        for request in self._requests.values():
            settle(request.future, error=error)
        self._requests.clear()

    def _timeout_error(self, what: str, now: float) -> ClientTimeout:
        failure = self._handshake.poll() if self._handshake is not None else None
        if failure is not None:
            return BrokerUnavailable(f"{what}: {failure} (broker {self.settings.broker_url})")
        quiet_s = BROKER_LOST_PINGS * self.settings.ping_interval_s
        if self._last_broker_msg is None or now - self._last_broker_msg > quiet_s:
            return BrokerUnavailable(f"{what}: broker {self.settings.broker_url} is not answering")
        return JobTimeout(what)

    def _fail_all(self, error: Exception) -> None:
        self._jobs.fail_all(error)
        for request in self._requests.values():
            settle(request.future, error=error)
        self._requests.clear()
        while True:
            try:
                cmd = self._commands.get_nowait()
            except queue.Empty:
                return
            if isinstance(cmd, (_SubmitCmd, _RequestCmd)):
                settle(cmd.future, error=error)
