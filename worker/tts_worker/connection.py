"""The worker's DEALER socket to the broker: fresh identity per socket, liveness, reconnect backoff.

Used only from the worker's I/O thread. Paranoid Pirate rules: a broker silent for
heartbeat_interval_s x heartbeat_liveness is dead; the socket is then closed (linger 0) and a new one, with a
new routing id, is opened after a backoff that doubles from reconnect_min_s to reconnect_max_s and resets once
the broker talks to us again.

An endpoint list (`tcp://a:5556,tcp://b:5556`: an active broker and its standbys, docs/failover.md) is tried
one endpoint at a time: each new socket connects to one endpoint only, the next in turn, so what it queues
(READY) can only reach that broker, and is dropped with the socket (linger 0) if that broker stays silent. A
standby binds nothing, so its endpoint is silent and the worker moves on after the liveness timeout, at once
while endpoints of the list are untried since a broker last answered, then with the backoff.

Every message goes out through `send()`, which takes a tts_protocol.messages model and frames it with
tts_protocol's encode: the worker never builds a frame or a body by hand.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Optional

import zmq

from tts_protocol import Command, Message, ProtocolError, Side, decode, encode
from tts_protocol.curve import CurveKeys, HandshakeWatch
from tts_protocol.endpoints import split_endpoints
from tts_protocol.messages import BODY_TYPES, Body

log = logging.getLogger(__name__)

MAX_INCOMING_BYTES = 16 * 1024 * 1024  # JOB bodies carry text only; refuse anything absurd


def new_routing_id() -> str:
    """`w-` + 16 hex digits: a reconnecting worker is always a new peer to the broker."""
    return "w-" + secrets.token_hex(8)


class BrokerConnection:
    """One DEALER socket at a time to the broker's backend endpoint."""

    def __init__(self, context: zmq.Context, endpoint: str, *, timeout_s: float,
                 backoff_min_s: float, backoff_max_s: float, curve: Optional[CurveKeys] = None) -> None:
        self.context = context
        self.curve = curve
        self._watch: Optional[HandshakeWatch] = None
        self.endpoints = split_endpoints(endpoint)
        self._next_endpoint = 0
        self._untried = len(self.endpoints) - 1
        self.endpoint = self.endpoints[0]
        self.timeout_s = timeout_s
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = max(backoff_min_s, backoff_max_s)
        self.socket: Optional[zmq.Socket] = None
        self.monitor: Optional[zmq.Socket] = None  # the watch's monitor, polled for closed connections (lists)
        self.routing_id = ""
        self.generation = 0  # counts sockets; a lease belongs to the generation that received it
        self.last_heard = 0.0
        self.answered = False  # this socket has received a message from a broker (not only connected)
        self.reconnect_at = 0.0
        self._backoff_s = backoff_min_s

    @property
    def connected(self) -> bool:
        return self.socket is not None

    def open(self) -> None:
        """A new socket with a new routing id; the caller sends READY on it."""
        if self.socket is not None:
            self.close()
        sock = self.context.socket(zmq.DEALER)
        self.routing_id = new_routing_id()
        sock.setsockopt(zmq.ROUTING_ID, self.routing_id.encode("ascii"))
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_INCOMING_BYTES)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        if self.curve is not None:
            self.curve.apply(sock)
        self._watch = HandshakeWatch(sock, curve=self.curve is not None)  # keyless at a CURVE port: say so
        self.endpoint = self.endpoints[self._next_endpoint % len(self.endpoints)]
        self._next_endpoint += 1
        sock.connect(self.endpoint)
        if len(self.endpoints) > 1:
            # A broker that dies closes the connection: move on at once, not after the liveness timeout. The
            # handshake watch is the socket's one monitor; it counts closed connections too.
            self.monitor = self._watch.socket
        self.socket = sock
        self.generation += 1
        self.last_heard = time.monotonic()
        self.answered = False
        log.info("[%s] connecting to broker %s", self.routing_id, self.endpoint)

    def close(self, *, linger_ms: int = 0) -> None:
        """Close the socket. linger_ms > 0 lets queued messages (last RESULT, DISCONNECT) go out first."""
        if self.socket is None:
            return
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        self.monitor = None
        self.socket.close(linger=linger_ms)
        self.socket = None

    def drop(self, reason: str) -> None:
        """Give up on this socket and schedule the next one after the current backoff."""
        if self._untried > 0:  # another endpoint of the list is untried since a broker last answered
            self._untried -= 1
            log.warning("[%s] %s; trying the next broker of the list", self.routing_id, reason)
            self.close()
            self.reconnect_at = time.monotonic()
            return
        log.warning("[%s] %s; reconnecting in %.1f s", self.routing_id, reason, self._backoff_s)
        self.close()
        self.reconnect_at = time.monotonic() + self._backoff_s
        self._backoff_s = min(self._backoff_s * 2, self.backoff_max_s)

    def send(self, command: Command, body: Body, payload: Optional[bytes] = None) -> bool:
        """Send without blocking; False (and a log line) if there is no socket or the pipe is full.

        TypeError if `body` is not the model `command` carries (a bug in the caller, not a peer's fault).
        """
        if not command.to_broker or command.side is not Side.WORKER:
            raise TypeError(f"{command.name} is not a worker-to-broker command")
        if type(body) is not BODY_TYPES[command]:
            raise TypeError(f"{command.name} carries {BODY_TYPES[command].__name__}, not {type(body).__name__}")
        if self.socket is None:
            return False
        frames = encode(command, body, payload)
        try:
            self.socket.send_multipart(frames, flags=zmq.NOBLOCK, copy=payload is None or len(payload) < 65536)
        except zmq.Again:
            log.warning("[%s] send queue full: %s dropped", self.routing_id, command.name)
            return False
        return True

    def receive(self, limit: int = 100) -> list[Message]:
        """Broker messages waiting now (at most `limit`); malformed ones are logged and skipped."""
        messages: list[Message] = []
        while self.socket is not None and len(messages) < limit:
            try:
                frames = self.socket.recv_multipart(flags=zmq.NOBLOCK, copy=True)
            except zmq.Again:
                break
            try:
                message = decode(frames, side=Side.WORKER, to_broker=False)
            except ProtocolError as exc:
                log.warning("[%s] malformed message from broker ignored: %s", self.routing_id, exc)
                continue
            self.last_heard = time.monotonic()
            if message.command is not Command.B_DISCONNECT:
                self.answered = True
                self._backoff_s = self.backoff_min_s
                self._untried = len(self.endpoints) - 1
            messages.append(message)
        return messages

    def disconnected(self) -> bool:
        """True if the connection to the broker closed (it died or stopped), from the handshake watch's monitor."""
        return self._watch is not None and self._watch.take_disconnect()

    @property
    def handshake_failure(self) -> Optional[str]:
        """Why this socket's handshake fails (refused key, CURVE mismatch, wrong broker key), if it does."""
        return self._watch.poll() if self._watch is not None else None

    @property
    def refused(self) -> bool:
        """True once the broker refused this socket's CURVE key (REFUSED says what to check)."""
        return self._watch is not None and self._watch.poll() is not None and self._watch.refused

    def answering(self, now: float) -> bool:
        """A broker answered on this socket, and within the liveness timeout (the worker is registered)."""
        return (self.socket is not None and self.answered and now - self.last_heard <= self.timeout_s
                and self.handshake_failure is None)

    def broker_silent(self, now: float) -> bool:
        """Time to give up on this socket: the broker is silent too long, or the handshake failed."""
        return self.socket is not None and (now - self.last_heard > self.timeout_s
                                            or self.handshake_failure is not None)
