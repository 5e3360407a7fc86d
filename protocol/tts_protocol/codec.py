"""Encode and decode TTSP/2 multipart messages (PROTOCOL.md section 2).

The one place that knows the frame layout, for DEALER peers (clients, workers: `encode`, `decode`) and for
the broker's ROUTER sockets (`RouterPort`). Decoding never raises anything but ProtocolError, whatever the
bytes, so a receiver's loop can catch one exception type and keep serving.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Optional, Sequence, Union

import msgpack
import zmq
from pydantic import ValidationError

from tts_protocol.constants import CLIENT_HEADER, PAYLOAD_COMMANDS, Command, Side
from tts_protocol.errors import ErrorCode, ProtocolError
from tts_protocol.messages import BODY_TYPES, Body

log = logging.getLogger(__name__)

Frame = Union[bytes, bytearray, memoryview, Any]  # zmq.Frame is accepted too (has .bytes / buffer)

_MAX_BODY_BYTES = 4 * 1024 * 1024  # bodies are metadata; audio rides in the payload frame
_COMMANDS = {int(command): command for command in Command}
_HEAD_FRAMES = {command: command.side.value + bytes((command,)) for command in Command}  # frame 0
_HEAD_LEN = len(CLIENT_HEADER) + 1
_MORE = int(zmq.SNDMORE | zmq.NOBLOCK)  # int flags: pyzmq spends a third of a send combining enum flags
_LAST = int(zmq.NOBLOCK)


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    """One decoded message: command, validated body and optional raw payload."""

    command: Command
    body: Body
    payload: Any = None  # bytes, or a zmq.Frame on a zero-copy socket


def encode(command: Command, body: Body, payload: Optional[bytes] = None) -> list[bytes]:
    """Frames for a DEALER peer to send (a ROUTER uses RouterPort.send)."""
    if not isinstance(body, BODY_TYPES[command]):
        raise TypeError(f"{command.name} takes a {BODY_TYPES[command].__name__} body, not {type(body).__name__}")
    if payload is not None and command not in PAYLOAD_COMMANDS:
        raise ValueError(f"{command.name} carries no payload")
    frames = [_HEAD_FRAMES[command], pack_body(body)]
    if payload is not None:
        frames.append(payload)
    return frames


def body_for(command: Command, fields: dict[str, Any]) -> Body:
    """Validate plain fields into the body type of `command` (tests, tools and peers that start from JSON)."""
    return BODY_TYPES[command].model_validate(fields)


def as_body(command: Command, body: Union[Body, dict[str, Any]]) -> Body:
    """`body` as is if it is a model, else validated by body_for (scripted test peers use both)."""
    return body if isinstance(body, Body) else body_for(command, body)


def pack_body(body: Body) -> bytes:
    return msgpack.packb(body.to_wire(), use_bin_type=True)


def _to_bytes(frame: Frame) -> bytes:
    if type(frame) is bytes:
        return frame
    if isinstance(frame, zmq.Frame):
        return frame.bytes
    return bytes(frame)


def decode(frames: Sequence[Frame], *, side: Side, to_broker: bool) -> Message:
    """Validate and decode frames (without a routing id) sent in the given direction.

    Raises ProtocolError, carrying the command and job/request id when they could be read.
    """
    count = len(frames)
    if not 2 <= count <= 3:
        if count in (4, 5) and not _to_bytes(frames[0]):
            raise ProtocolError("a TTSP/1 message (empty delimiter frame first); this peer speaks TTSP/2")
        raise ProtocolError(f"expected 2 or 3 frames, got {count}")
    head = _to_bytes(frames[0])
    if len(head) != _HEAD_LEN or head[:-1] != side.value:
        raise ProtocolError(f"bad frame 0 {head[:16]!r}: expected {side.value!r} and a command byte")
    command = _COMMANDS.get(head[-1])
    if command is None:
        raise ProtocolError(f"unknown command 0x{head[-1]:02x}")
    if command.side is not side or command.to_broker is not to_broker:
        raise ProtocolError(f"command {command.name} not allowed here", command=command)
    raw = _unpack_map(_to_bytes(frames[1]), command)
    payload: Any = None  # bytes, or a zmq.Frame on a zero-copy socket
    if count == 3:
        if command not in PAYLOAD_COMMANDS:
            raise ProtocolError(f"{command.name} takes no payload frame", command=command, **_ids(raw))
        payload = frames[2] if isinstance(frames[2], zmq.Frame) else _to_bytes(frames[2])
    elif command in PAYLOAD_COMMANDS:
        raise ProtocolError(f"{command.name} needs a payload frame", command=command, **_ids(raw))
    try:
        body = BODY_TYPES[command].model_validate(raw)
    except ValidationError as exc:
        raise ProtocolError(f"invalid {command.name} body: {_summarise(exc)}", command=command,
                            code=_code_for(exc), **_ids(raw)) from exc
    return Message(command, body, payload)


class RouterPort:
    """The broker's end of one side of TTSP: a bound ROUTER socket, messages in and out.

    Sends never block: a peer that is gone (ROUTER_MANDATORY) or saturated loses the message, logged, and the
    broker's own timers decide what that means. Frames go out one call each with int flags, since this is
    the broker's hottest path.
    """

    def __init__(self, sock: zmq.Socket, side: Side) -> None:
        self.sock = sock
        self.side = side
        self.last_errno = 0  # why the last send() returned False: zmq.EAGAIN (peer's queue full) or EHOSTUNREACH

    def send(self, identity: bytes, command: Command, body: Union[Body, bytes], payload: Any = None) -> bool:
        """Send `body` (a model, or bytes from tts_protocol.fastpack) to `identity`; False if undeliverable."""
        send = self.sock.send
        try:
            send(identity, _MORE)
        except zmq.ZMQError as exc:
            if exc.errno in (zmq.EHOSTUNREACH, zmq.EAGAIN):
                log.debug("peer %r unreachable (%s); %s dropped", identity, exc.strerror, command.name)
                self.last_errno = exc.errno
                return False
            raise
        send(_HEAD_FRAMES[command], _MORE)
        packed = body if type(body) is bytes else pack_body(body)  # type: ignore[arg-type]
        if payload is None:
            send(packed, _LAST)
        else:
            send(packed, _MORE)
            send(payload, _LAST, copy=False)
        return True

    def send_frames(self, identity: bytes, frames: Sequence[bytes]) -> bool:
        """Send frames made once by `encode` (a heartbeat to every worker, say)."""
        try:
            self.sock.send(identity, _MORE)
        except zmq.ZMQError as exc:
            if exc.errno in (zmq.EHOSTUNREACH, zmq.EAGAIN):
                return False
            raise
        last = len(frames) - 1
        for i, frame in enumerate(frames):
            self.sock.send(frame, _MORE if i < last else _LAST)
        return True

    def recv(self) -> Optional[list[zmq.Frame]]:
        """The next waiting multipart message (zmq.Frames, routing id first), or None when none is waiting.

        Zero-copy frames and Frame.more instead of recv_multipart's copy and RCVMORE query per frame: about
        half the cost per message, and audio is forwarded as it arrived.
        """
        recv = self.sock.recv
        try:
            frame = recv(_LAST, copy=False)
        except zmq.Again:
            return None
        frames = [frame]
        while frame.more:
            frame = recv(_LAST, copy=False)
            frames.append(frame)
        return frames

    def parse(self, frames: list[Any]) -> tuple[bytes, Message]:
        """(routing id, message); raises ProtocolError for a malformed message (the id is still frames[0])."""
        return routing_id(frames), decode(frames[1:], side=self.side, to_broker=True)

    def parse_peer(self, frames: list[Any]) -> tuple[bytes, Optional[str], Message]:
        """(routing id, ZAP User-Id, message) on a CURVE socket; raises ProtocolError like parse."""
        return routing_id(frames), user_id(frames), decode(frames[1:], side=self.side, to_broker=True)


def routing_id(frames: Sequence[Frame]) -> bytes:
    return _to_bytes(frames[0])


def user_id(frames: Sequence[Frame]) -> Optional[str]:
    """The ZAP User-Id the authenticator gave the sender's connection (None without one).

    libzmq attaches it to the frames the peer sent, not to the routing id frame the ROUTER adds.
    """
    if len(frames) < 2 or not isinstance(frames[1], zmq.Frame):
        return None
    try:
        value = frames[1].get("User-Id")
    except zmq.ZMQError:
        return None
    return value if isinstance(value, str) and value else None




_MAX_ECHOED_ID = 256  # an ERROR body echoes job_id / req_id only up to this length (ShortStr)
_RANGE_ERRORS = frozenset({"less_than", "less_than_equal", "greater_than", "greater_than_equal"})
_SIZE_ERRORS = frozenset({"string_too_long", "too_long", "bytes_too_long"})


def _ids(raw: dict[str, Any]) -> dict[str, Any]:
    """The ids to echo in an ERROR: only str ids short enough to fit an ERROR body (longer ones: none)."""
    return {k: v if isinstance(v := raw.get(k), str) and len(v) <= _MAX_ECHOED_ID else None
            for k in ("job_id", "req_id")}


def _code_for(exc: ValidationError) -> ErrorCode:
    """out_of_range / too_large when every problem is a number or size past its limit, else protocol."""
    kinds = {err["type"] for err in exc.errors()}
    if kinds <= _RANGE_ERRORS:
        return ErrorCode.OUT_OF_RANGE
    if kinds <= _SIZE_ERRORS:
        return ErrorCode.TOO_LARGE
    return ErrorCode.PROTOCOL


def _unpack_map(data: bytes, command: Command) -> dict[str, Any]:
    if len(data) > _MAX_BODY_BYTES:
        raise ProtocolError(f"{command.name} body too large ({len(data)} bytes; limit {_MAX_BODY_BYTES})",
                            command=command, code=ErrorCode.TOO_LARGE)
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise ProtocolError(f"{command.name} body is not valid msgpack ({type(exc).__name__}: {exc})",
                            command=command) from exc
    if not isinstance(raw, dict):
        raise ProtocolError(f"{command.name} body must be a msgpack map", command=command)
    return raw


def _summarise(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(_printable(str(p)[:64]) for p in err["loc"]) or "body"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def _printable(text: str) -> str:
    """`text` with control characters escaped: peer-chosen keys end up in log lines and must not forge them."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
