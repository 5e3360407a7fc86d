"""The supervisor's client socket to the broker's frontend: BROKER_STATUS and DRAIN_WORKER requests.

A DEALER that speaks the client side of TTSP/2 through tts_protocol's encode/decode (the worker package does
not import the client). Each request waits up to `timeout_s`; a lost reply closes the socket and the next
request opens a fresh one (lazy pirate), so a restarted broker is picked up again.
"""

from __future__ import annotations

import itertools
import logging
import re
from typing import Any, Optional

import zmq

from tts_protocol import Command, ProtocolError, Side, decode, encode
from tts_protocol.messages import AdminReply, Body, BrokerStatusReply, DrainWorker, Error, StatusRequest, StatusView

log = logging.getLogger(__name__)

_TCP = re.compile(r"^(tcp://.+):(\d+)$")


def derive_frontend(backend: str) -> Optional[str]:
    """The broker's frontend from its backend, by the default layout (frontend port = backend port - 1).

    tcp://10.0.0.1:5556 -> tcp://10.0.0.1:5555; ipc://X-backend -> ipc://X-frontend; None otherwise.
    """
    match = _TCP.match(backend)
    if match:
        return f"{match.group(1)}:{int(match.group(2)) - 1}"
    if backend.startswith("ipc://") and "backend" in backend:
        return backend[::-1].replace("backend"[::-1], "frontend"[::-1], 1)[::-1]
    return None


class BrokerProbe:
    """Request/reply to the broker's client port, one request at a time."""

    def __init__(self, endpoint: str, *, timeout_s: float = 2.0, context: Optional[zmq.Context] = None) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self._ctx = context or zmq.Context.instance()
        self._sock: Optional[zmq.Socket] = None
        self._seq = itertools.count(1)

    def status(self, worker_prefix: Optional[str] = None) -> Optional[StatusView]:
        """The broker's status with only the workers named `worker_prefix...`: a size the fleet cannot grow."""
        reply = self._ask(Command.BROKER_STATUS, lambda r: StatusRequest(req_id=r, worker_prefix=worker_prefix))
        return reply.status if isinstance(reply, BrokerStatusReply) else None

    def drain(self, worker: str) -> bool:
        """DRAIN_WORKER by name; True if the broker drains it."""
        reply = self._ask(Command.DRAIN_WORKER, lambda r: DrainWorker(req_id=r, worker=worker))
        return isinstance(reply, AdminReply) and bool(reply.workers)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def _ask(self, command: Command, build: Any) -> Optional[Body]:
        if self._sock is None:
            self._sock = self._ctx.socket(zmq.DEALER)
            self._sock.setsockopt(zmq.LINGER, 0)
            self._sock.connect(self.endpoint)
        req_id = f"sup-{next(self._seq)}"
        self._sock.send_multipart(encode(command, build(req_id)))
        deadline_ms = int(self.timeout_s * 1000)
        while self._sock.poll(deadline_ms, zmq.POLLIN):
            frames = self._sock.recv_multipart()
            try:
                message = decode(frames, side=Side.CLIENT, to_broker=False)
            except ProtocolError as exc:
                log.warning("supervisor: dropped a malformed reply from the broker: %s", exc)
                continue
            body = message.body
            if getattr(body, "req_id", None) != req_id:
                continue  # a late reply to an earlier request
            if isinstance(body, Error):
                log.info("supervisor: broker answered %s with %s: %s", command.name, body.code, body.message)
            return body
        log.info("supervisor: no answer from the broker at %s within %.1fs", self.endpoint, self.timeout_s)
        self.close()
        return None
