"""Scripted protocol peers, one family on real sockets, speaking TTSP/2 through tts_protocol one message at a time.

Toward a real broker: RawClient and RawWorker (DEALERs), so a test can script exactly what a worker does (answer
late, go silent, send garbage) and see exactly what the broker sends back. In place of the broker:
ScriptedRouter (a ROUTER on a random loopback port) and its two kinds, ScriptedBroker for the clients under
test (Python and Node) and WorkerScriptedBroker for a worker process under test. Made from the `ctx` fixture's
context, they are closed at teardown.

Sentinels (`assert_quiet`): a test that asserts something does NOT arrive sends a request the broker answers
in order and checks that the answer comes first, with nothing before it; a slow machine makes such a test
slower, never vacuous. A client PINGs twice: the broker answers PING at once, while what it holds for its
group commit (ACCEPTED, RESULT, JOB) goes out at the end of that turn of its loop; a PING sent after the first
PONG came back is handled in a later turn, so its PONG follows everything the earlier messages caused. (Only a
broker thread stalled between two reads for a whole round trip could handle both in one turn: a sentinel can
then miss a stray message, but never fails a correct broker.)
"""

from __future__ import annotations

import collections
import secrets
import time
from typing import Any, Callable, Optional, Union

import zmq

from tts_protocol import Command, Message, Side, as_body, decode, encode
from tts_protocol.curve import CurveKeys, HandshakeWatch
from tts_protocol.messages import Body, Ready


class Peer:
    def __init__(self, ctx: zmq.Context, endpoint: str, side: Side, identity: Optional[bytes] = None,
                 curve: Optional[CurveKeys] = None, best_effort: bool = False) -> None:
        """best_effort: a peer the broker may refuse (CURVE): a send that cannot go out within 1 s is dropped
        (a DEALER whose connection was refused has no pipe and would block), not waited on."""
        self.side = side
        self.best_effort = best_effort
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if best_effort:
            self.sock.setsockopt(zmq.SNDTIMEO, 1000)
        self.sock.setsockopt(zmq.ROUTING_ID, identity or (b"p-" + secrets.token_hex(8).encode()))
        self.watch: Optional[HandshakeWatch] = None
        if curve is not None:
            curve.apply(self.sock)
            self.watch = HandshakeWatch(self.sock)
        self.sock.connect(endpoint)
        adopt = getattr(ctx, "adopt", None)
        if adopt is not None:  # the `ctx` fixture's context closes its peers at teardown
            adopt(self)

    def send(self, command: Command, body: dict[str, Any], payload: Optional[bytes] = None) -> None:
        try:
            self.sock.send_multipart(encode(command, as_body(command, body), payload))
        except zmq.Again:
            if not self.best_effort:
                raise

    def send_raw(self, frames: list[bytes]) -> None:
        self.sock.send_multipart(frames)

    def recv(self, timeout_s: float = 10.0) -> Message:
        if not self.sock.poll(timeout_s * 1000):
            raise AssertionError(f"no message within {timeout_s}s")
        return decode(self.sock.recv_multipart(), side=self.side, to_broker=False)

    def recv_until(self, command: Command, timeout_s: float = 10.0, skip: tuple[Command, ...] = ()) -> Message:
        """Receive until `command` arrives; others must be in `skip` (heartbeats and ACCEPTED always are)."""
        return self.expect_first(command, ignore=(*skip, Command.B_HEARTBEAT, Command.ACCEPTED), timeout_s=timeout_s)

    def expect_first(self, command: Command, match: Callable[[Message], bool] = lambda _msg: True, *,
                     ignore: tuple[Command, ...] = (), timeout_s: float = 10.0) -> Message:
        """The next message that is `command` and satisfies `match`; anything else not in `ignore` fails."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {command.name} within {timeout_s}s")
            msg = self.recv(left)
            if msg.command is command and match(msg):
                return msg
            if msg.command not in ignore:
                raise AssertionError(f"expected nothing before {command.name}, got {msg.command.name} {msg.body}")

    def close(self) -> None:
        """Close the socket (and its CURVE handshake monitor); a second call does nothing."""
        if self.watch is not None:
            self.watch.close()
        self.sock.close(0)


class RawClient(Peer):
    def __init__(self, ctx: zmq.Context, endpoint: str, curve: Optional[CurveKeys] = None,
                 best_effort: bool = False, identity: Optional[bytes] = None) -> None:
        super().__init__(ctx, endpoint, Side.CLIENT, identity=identity, curve=curve, best_effort=best_effort)
        self._req = 0

    def submit(self, job_id: str, text: str = "hello", **fields: Any) -> None:
        self.send(Command.SUBMIT, {"job_id": job_id, "text": text, **fields})

    def request(self, command: Command, reply: Command, **fields: Any) -> Message:
        self._req += 1
        self.send(command, {"req_id": f"r{self._req}", **fields})
        return self.recv_until(reply, skip=(Command.ACCEPTED, Command.RESULT, Command.ERROR, Command.PARTIAL))

    def status(self) -> Any:
        return self.request(Command.BROKER_STATUS, Command.BROKER_STATUS_REPLY).body.status

    def ping(self, ignore: tuple[Command, ...] = (Command.ACCEPTED, Command.RESULT, Command.ERROR,
                                                     Command.PARTIAL)) -> Message:
        """PING and wait for its PONG; what arrives before it must be in `ignore`."""
        self._req += 1
        req_id = f"r{self._req}"
        self.send(Command.PING, {"req_id": req_id})
        return self.expect_first(Command.PONG, lambda m: m.body.req_id == req_id, ignore=ignore)

    def assert_quiet(self, ignore: tuple[Command, ...] = ()) -> None:
        """Sentinel for this socket: nothing but `ignore` arrives before two PINGs in a row are answered.

        Call it once the broker has handled what should cause nothing (a message on this socket did, or the
        test saw its effect in another client's status view).
        """
        for _ in range(2):
            self.ping(ignore=ignore)


class RawWorker(Peer):
    def __init__(self, ctx: zmq.Context, endpoint: str, *, engine: str = "tone", model: str = "tone-v1",
                 capacity: int = 1, name: str = "raw", curve: Optional[CurveKeys] = None,
                 identity: Optional[bytes] = None, best_effort: bool = False) -> None:
        super().__init__(ctx, endpoint, Side.WORKER, identity=identity or b"w-" + secrets.token_hex(8).encode(),
                         curve=curve, best_effort=best_effort)
        self.worker_id = self.sock.getsockopt(zmq.ROUTING_ID).decode()
        self.ready = Ready(worker_id=self.worker_id, name=name, host="test", pid=0, engine=engine, model=model,
                           capacity=capacity, sample_rate=16000)
        self.send(Command.W_READY, self.ready.to_wire())

    @property
    def route(self) -> str:
        """The routing key only this worker serves (in tests that give each worker its own engine or model)."""
        return f"{self.ready.engine}:{self.ready.model}" if self.ready.model else self.ready.engine

    def assert_quiet(self, via: RawClient, ignore: tuple[Command, ...] = (Command.B_HEARTBEAT,)) -> None:
        """Sentinel for this worker's socket: nothing but `ignore` arrives before a RELOAD marked as a sentinel.

        A worker cannot PING, so `via` pings the broker (its earlier messages are handled, and a RELOAD sent
        now is handled in a later turn of the loop), then asks for a RELOAD of this worker's route: the broker
        forwards it at once, in order after any JOB or CANCEL it sent this worker before. Side effect: the
        broker clears its result cache (as on every RELOAD). Call it once the broker has handled what should
        cause nothing; for a message this worker sent, wait for its effect in `via`'s status view first.
        """
        via.ping()
        token = "sentinel-" + secrets.token_hex(4)
        reply = via.request(Command.RELOAD, Command.RELOAD_REPLY, model=self.route, options={"sentinel": token})
        assert reply.body.workers == 1, f"{reply.body.workers} workers serve {self.route}: the sentinel needs one"
        self.expect_first(Command.B_RELOAD, lambda m: m.body.options.get("sentinel") == token, ignore=ignore)

    def heartbeat(self, **stats: Any) -> None:
        self.send(Command.W_HEARTBEAT, {"stats": stats})

    def next_job(self, timeout_s: float = 10.0) -> Any:
        return self.recv_until(Command.B_JOB, timeout_s).body

    def result(self, job: Any, pcm: bytes = b"\x00\x01" * 8, sample_rate: int = 16000) -> None:
        self.send(Command.W_RESULT, {"job_id": job.job_id, "attempt": job.attempt, "sample_rate": sample_rate},
                  pcm)

    def fail(self, job: Any, code: str = "engine_error", retryable: bool = False, message: str = "") -> None:
        self.send(Command.W_FAIL, {"job_id": job.job_id, "attempt": job.attempt, "code": code,
                                   "message": message, "retryable": retryable})


# ---- in place of the broker ----------------------------------------------------------------------------------


class ScriptedRouter:
    """A ROUTER on a random loopback port that the test drives, standing in for the broker: what the peer under
    test sends is decoded as its `side` sends it; `restart` closes and rebinds the same port (a broker restart)."""

    def __init__(self, ctx: zmq.Context, side: Side) -> None:
        self.ctx = ctx
        self.side = side
        self.port = 0
        self.sock = self._bind()
        self.url = f"tcp://127.0.0.1:{self.port}"
        adopt = getattr(ctx, "adopt", None)
        if adopt is not None:  # the `ctx` fixture's context closes it at teardown
            adopt(self)

    def _bind(self) -> zmq.Socket:
        sock = self.ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        if not self.port:
            self.port = sock.bind_to_random_port("tcp://127.0.0.1")
            return sock
        # ZeroMQ closes the old listener asynchronously: retry until the port is free again.
        deadline = time.monotonic() + 10
        while True:
            try:
                sock.bind(f"tcp://127.0.0.1:{self.port}")
                return sock
            except zmq.ZMQError:
                if time.monotonic() > deadline:
                    sock.close(linger=0)
                    raise
                time.sleep(0.05)

    def restart(self) -> None:
        """Close and rebind on the same port: to the peer this is a broker restart (silence, then a new peer)."""
        self.sock.close(linger=0)
        self.sock = self._bind()

    def receive(self, timeout_s: float) -> Optional[tuple[bytes, Message]]:
        """The next (routing id, message), or None after timeout_s."""
        if not self.sock.poll(int(max(0.0, timeout_s) * 1000)):
            return None
        identity, *frames = self.sock.recv_multipart()
        return identity, decode(frames, side=self.side, to_broker=True)

    def send_to(self, identity: bytes, command: Command, body: Union[dict[str, Any], Body],
                payload: Optional[bytes] = None) -> None:
        self.sock.send_multipart([identity, *encode(command, as_body(command, body), payload)])

    def send_raw(self, identity: bytes, frames: list[bytes]) -> None:
        self.sock.send_multipart([identity, *frames])

    def close(self) -> None:
        self.sock.close(0)


class ScriptedBroker(ScriptedRouter):
    """The broker as a client sees it: PINGs answered with PONG(`broker_id`) while `answer_pings`, RETRY
    requests noted (not answered), everything else left to the test.

    Two ways to read: `recv(command)` takes the next message, which must be `command` (PINGs and RETRYs are
    handled on the way); `pump`/`next` queue messages in `backlog` with their arrival times, for timing.
    """

    def __init__(self, ctx: zmq.Context) -> None:
        super().__init__(ctx, Side.CLIENT)
        self.broker_id = "b-one"
        self.answer_pings = True
        self.pings_answered = 0
        self.retries: list[str] = []  # job ids of every RETRY seen
        self.retried: set[str] = set()  # jobs with a RETRY not yet followed by their SUBMIT (pump)
        self.backlog: collections.deque[tuple[float, Message]] = collections.deque()
        self.identity: Optional[bytes] = None  # the client that spoke last

    def _handled(self, identity: bytes, msg: Message) -> bool:
        """Answer a PING, note a RETRY; True if the message was one of them."""
        self.identity = identity
        if msg.command is Command.PING:
            if self.answer_pings:
                self.send_to(identity, Command.PONG, {"req_id": msg.body.req_id, "broker_id": self.broker_id,
                                                      "time_ms": 1})
                self.pings_answered += 1
            return True
        if msg.command is Command.RETRY:
            self.retries.append(msg.body.job_id)
            self.retried.add(msg.body.job_id)
            return True
        return False

    def recv(self, command: Command, timeout_s: float = 10.0) -> tuple[bytes, Message]:
        """The next client message with `command` (PINGs are answered or dropped on the way, RETRYs noted)."""
        deadline = time.monotonic() + timeout_s
        while (item := self.receive(deadline - time.monotonic())) is not None:
            identity, msg = item
            if msg.command is command and command in (Command.PING, Command.RETRY):
                self._handled(identity, msg)
                return identity, msg
            if self._handled(identity, msg):
                continue
            if msg.command is command:
                return identity, msg
            raise AssertionError(f"expected {command.name}, got {msg.command.name}")
        raise AssertionError(f"no {command.name} within {timeout_s}s")

    def pings_first(self, count: int, timeout_s: float = 10.0) -> None:
        """Sentinel: the client's next `count` PINGs arrive (and are answered) with nothing else before them.

        The client pings on its own, on its one socket, in order with everything else it sends.
        """
        for _ in range(count):
            self.recv(Command.PING, timeout_s)

    def pump(self, timeout_s: float) -> None:
        """Receive for up to timeout_s (returns after the first batch): PINGs and RETRYs handled, the rest
        queued in `backlog` with their arrival time."""
        if not self.sock.poll(int(max(0.0, timeout_s) * 1000)):
            return
        while True:
            try:
                identity, *frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            msg = decode(frames, side=Side.CLIENT, to_broker=True)
            if not self._handled(identity, msg):
                self.backlog.append((time.monotonic(), msg))

    def next(self, timeout_s: float = 5.0) -> tuple[float, Message]:
        """The oldest queued message and its arrival time (pumping until one comes)."""
        deadline = time.monotonic() + timeout_s
        while not self.backlog:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"nothing from the client within {timeout_s}s")
            self.pump(left)
        return self.backlog.popleft()

    def reply(self, command: Command, body: Union[dict[str, Any], Body], payload: Optional[bytes] = None) -> None:
        """Send to the client that spoke last."""
        assert self.identity is not None, "the client has not spoken yet"
        self.send_to(self.identity, command, body, payload)


class WorkerScriptedBroker(ScriptedRouter):
    """The broker as a worker sees it: answers READY and HEARTBEAT with HEARTBEAT (while `answer_heartbeats`)
    and an unknown routing id with DISCONNECT, as a real broker does; keeps every message in `log`."""

    def __init__(self, ctx: zmq.Context) -> None:
        super().__init__(ctx, Side.WORKER)
        self.backend = self.url  # what start_worker connects the worker to
        self.log: list[tuple[bytes, Message]] = []
        self.answer_heartbeats = True  # keeps the worker's liveness check happy while the test reads
        self.known: set[bytes] = set()  # routing ids that sent READY since the last (re)start

    def restart(self) -> None:
        self.known.clear()
        super().restart()

    def recv(self, timeout_s: float = 10.0) -> Optional[tuple[bytes, Message]]:
        item = self.receive(timeout_s)
        if item is None:
            return None
        self.log.append(item)
        rid, msg = item
        if msg.command is Command.W_READY:
            self.known.add(rid)
        if self.answer_heartbeats and msg.command in (Command.W_READY, Command.W_HEARTBEAT):
            if rid in self.known:
                self.send_to(rid, Command.B_HEARTBEAT, {})
            else:  # what a real broker says to a peer it does not know (PROTOCOL.md section 5)
                self.send_to(rid, Command.B_DISCONNECT, {"reason": "unknown worker"})
        return item

    def expect(self, command: Command, timeout_s: float = 15.0,
               where: Callable[[bytes, Message], bool] = lambda rid, m: True) -> tuple[bytes, Message]:
        """The next `command` matching `where`; other messages are kept in `log` and skipped."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            item = self.recv(max(0.0, left)) if left > 0 else None
            if item is None:
                seen = [m.command.name for _, m in self.log[-10:]]
                raise AssertionError(f"no {command.name} within {timeout_s}s (last seen: {seen})")
            if item[1].command is command and where(*item):
                return item

    def job(self, rid: bytes, job_id: str, text: str = "Hello there.", attempt: int = 1, **extra: object) -> None:
        self.send_to(rid, Command.B_JOB, {"job_id": job_id, "attempt": attempt, "text": text, **extra})
