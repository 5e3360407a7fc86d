"""Hand-driven protocol peers for broker tests: a raw client and a raw worker on real DEALER sockets.

They speak TTSP/2 through tts_protocol, one message at a time, so a test can script exactly what a worker
does (answer late, go silent, send garbage) and see exactly what the broker sends back.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Optional

import zmq

from tts_protocol import Command, Message, Side, decode, encode
from tts_protocol.messages import Ready


class Peer:
    def __init__(self, ctx: zmq.Context, endpoint: str, side: Side, identity: Optional[bytes] = None) -> None:
        self.side = side
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.ROUTING_ID, identity or (b"p-" + secrets.token_hex(8).encode()))
        self.sock.connect(endpoint)

    def send(self, command: Command, body: dict[str, Any], payload: Optional[bytes] = None) -> None:
        self.sock.send_multipart(encode(command, body, payload))

    def send_raw(self, frames: list[bytes]) -> None:
        self.sock.send_multipart(frames)

    def recv(self, timeout_s: float = 10.0) -> Message:
        if not self.sock.poll(timeout_s * 1000):
            raise AssertionError(f"no message within {timeout_s}s")
        return decode(self.sock.recv_multipart(), side=self.side, to_broker=False)

    def recv_until(self, command: Command, timeout_s: float = 10.0, skip: tuple[Command, ...] = ()) -> Message:
        """Receive until `command` arrives; others must be in `skip` (heartbeats and ACCEPTED always are)."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {command.name} within {timeout_s}s")
            msg = self.recv(left)
            if msg.command is command:
                return msg
            if msg.command not in (*skip, Command.B_HEARTBEAT, Command.ACCEPTED):
                raise AssertionError(f"expected {command.name}, got {msg.command.name} {msg.body}")

    def nothing_for(self, seconds: float, ignore: tuple[Command, ...] = (Command.B_HEARTBEAT,)) -> bool:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self.sock.poll(left * 1000):
                msg = decode(self.sock.recv_multipart(), side=self.side, to_broker=False)
                if msg.command not in ignore:
                    raise AssertionError(f"unexpected {msg.command.name} {msg.body}")
        return True

    def close(self) -> None:
        self.sock.close(0)


class RawClient(Peer):
    def __init__(self, ctx: zmq.Context, endpoint: str) -> None:
        super().__init__(ctx, endpoint, Side.CLIENT)
        self._req = 0

    def submit(self, job_id: str, text: str = "hello", **fields: Any) -> None:
        self.send(Command.SUBMIT, {"job_id": job_id, "text": text, **fields})

    def request(self, command: Command, reply: Command, **fields: Any) -> Message:
        self._req += 1
        self.send(command, {"req_id": f"r{self._req}", **fields})
        return self.recv_until(reply, skip=(Command.ACCEPTED, Command.RESULT, Command.ERROR, Command.PARTIAL))

    def status(self) -> Any:
        return self.request(Command.BROKER_STATUS, Command.BROKER_STATUS_REPLY).body.status


class RawWorker(Peer):
    def __init__(self, ctx: zmq.Context, endpoint: str, *, engine: str = "tone", model: str = "tone-v1",
                 capacity: int = 1, name: str = "raw") -> None:
        super().__init__(ctx, endpoint, Side.WORKER, identity=b"w-" + secrets.token_hex(8).encode())
        self.worker_id = self.sock.getsockopt(zmq.ROUTING_ID).decode()
        self.ready = Ready(worker_id=self.worker_id, name=name, host="test", pid=0, engine=engine, model=model,
                           capacity=capacity, sample_rate=16000)
        self.send(Command.W_READY, self.ready.to_wire())

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
