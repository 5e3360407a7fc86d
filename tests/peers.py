"""Hand-driven protocol peers for broker tests: a raw client and a raw worker on real DEALER sockets.

They speak TTSP/2 through tts_protocol, one message at a time, so a test can script exactly what a worker
does (answer late, go silent, send garbage) and see exactly what the broker sends back.

Sentinels (`assert_quiet`): a test that asserts something does NOT arrive sends a request the broker answers
in order and checks that the answer comes first, with nothing before it; a slow machine makes such a test
slower, never vacuous. A client PINGs twice: the broker answers PING at once, while what it holds for its
group commit (ACCEPTED, RESULT, JOB) goes out at the end of that turn of its loop; a PING sent after the first
PONG came back is handled in a later turn, so its PONG follows everything the earlier messages caused. (Only a
broker thread stalled between two reads for a whole round trip could handle both in one turn: a sentinel can
then miss a stray message, but never fails a correct broker.)
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Callable, Optional

import zmq

from tts_protocol import Command, Message, Side, as_body, decode, encode
from tts_protocol.curve import CurveKeys, HandshakeWatch
from tts_protocol.messages import Ready


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
        if self.watch is not None:
            self.watch.close()
        self.sock.close(0)


class RawClient(Peer):
    def __init__(self, ctx: zmq.Context, endpoint: str, curve: Optional[CurveKeys] = None,
                 best_effort: bool = False) -> None:
        super().__init__(ctx, endpoint, Side.CLIENT, curve=curve, best_effort=best_effort)
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
