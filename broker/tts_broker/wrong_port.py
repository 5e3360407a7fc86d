"""A peer at the wrong port hears so, instead of waiting on a broker that says nothing it can read.

The backend drops what is not a worker message. A message with the client header is answered, on the same
socket and in the client's framing, with ERROR `bad_request` naming the frontend, echoing the request's req_id
or job_id so the waiting call ends with it (a `tts --broker tcp://host:5556 ...` mistake).

The frontend answers what it cannot decode with ERROR `protocol`, in the client's framing, which a worker cannot
read either. A worker's READY or HEARTBEAT there (a `tts-worker --broker tcp://host:5555` mistake) is answered in
the worker's framing with DISCONNECT whose reason names the backend; the worker logs it and reconnects with its
backoff, as after any DISCONNECT. Only a well-formed READY or HEARTBEAT counts: other worker-looking garbage
still gets the ERROR `protocol` every malformed client message gets.

Both answers share one budget (AnswerRate, a few a second), and each kind is logged at most once a minute: a
misconfigured fleet or a flood costs the broker little.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Optional

from tts_protocol import Command, ErrorCode, ProtocolError, Side, decode, encode
from tts_protocol.codec import RouterPort
from tts_protocol.constants import CLIENT_HEADER, WORKER_HEADER
from tts_protocol.messages import Disconnect, Error

from tts_broker.throttle import LogThrottle

log = logging.getLogger(__name__)

ANSWERS_PER_S = 20.0  # answers to misdirected peers, both ports together (the burst allowed is as many)
_WORKER_HELLOS = (Command.W_READY, Command.W_HEARTBEAT)


class AnswerRate:
    """A token bucket: at most `per_s` answers a second on average, `per_s` at once."""

    def __init__(self, per_s: float = ANSWERS_PER_S, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_s = per_s
        self._clock = clock
        self._tokens = per_s
        self._at = clock()
        self.suppressed = 0

    def allow(self) -> bool:
        now = self._clock()
        self._tokens = min(self.per_s, self._tokens + (now - self._at) * self.per_s)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        self.suppressed += 1
        return False


class WrongPort:
    """Answers for peers at the wrong port, for one broker (its endpoints, one AnswerRate, one log throttle each)."""

    def __init__(self, *, frontend: str, backend: str, rate: Optional[AnswerRate] = None) -> None:
        self.frontend, self.backend = frontend, backend
        self.rate = rate or AnswerRate()
        self._client_log = LogThrottle(log, interval_s=60.0)
        self._worker_log = LogThrottle(log, interval_s=60.0)

    def client_at_backend(self, port: RouterPort, frames: list[Any]) -> bool:
        """If `frames` (identity first) carry a client message, answer it with ERROR bad_request; True if it did
        (or would have, but the rate was spent: the message is dropped either way)."""
        if len(frames) < 2 or not bytes(frames[1]).startswith(CLIENT_HEADER):
            return False
        self._client_log.warning("a client (peer %r) sent %d frames to the worker port; told it the frontend %s",
                                 bytes(frames[0]), len(frames) - 1, self.frontend)
        if not self.rate.allow():
            return True
        job_id: Optional[str] = None
        req_id: Optional[str] = None
        try:
            message = decode([bytes(f) for f in frames[1:]], side=Side.CLIENT, to_broker=True)
            job_id = getattr(message.body, "job_id", None)
            req_id = getattr(message.body, "req_id", None)
        except ProtocolError as exc:
            job_id, req_id = exc.job_id, exc.req_id
        error = Error(job_id=job_id if isinstance(job_id, str) else None, req_id=req_id if isinstance(req_id, str)
                      else None, code=ErrorCode.BAD_REQUEST.value, retryable=False,
                      message=f"this is the broker's worker port; clients connect to its frontend ({self.frontend})")
        port.send_frames(bytes(frames[0]), encode(Command.ERROR, error))
        return True

    def worker_at_frontend(self, port: RouterPort, frames: list[Any]) -> bool:
        """If `frames` (identity first) carry a worker's READY or HEARTBEAT, answer it with DISCONNECT naming the
        backend; True if it did (or the rate was spent: dropped then)."""
        if len(frames) < 2 or not bytes(frames[1]).startswith(WORKER_HEADER):
            return False
        try:
            message = decode([bytes(f) for f in frames[1:]], side=Side.WORKER, to_broker=True)
        except ProtocolError:
            return False  # not a worker's hello: answered as any malformed client message
        if message.command not in _WORKER_HELLOS:
            return False
        self._worker_log.warning("a worker (peer %r) sent %s to the client port; told it the backend %s",
                                 bytes(frames[0]), message.command.name.removeprefix("W_"), self.backend)
        if not self.rate.allow():
            return True
        reason = f"this is the broker's client port; workers connect to its backend ({self.backend})"
        port.send_frames(bytes(frames[0]), encode(Command.B_DISCONNECT, Disconnect(reason=reason)))
        return True
