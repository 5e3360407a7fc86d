"""Encode and decode TTSP/1 multipart messages (PROTOCOL.md section 2).

The one place that knows the frame layout. Decoding never raises anything but ProtocolError, whatever the
bytes, so a receiver's loop can catch one exception type and keep serving.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence, Union

import msgpack
from pydantic import ValidationError

from tts_protocol.constants import PAYLOAD_COMMANDS, Command, Side
from tts_protocol.errors import ProtocolError
from tts_protocol.messages import BODY_TYPES, Body

Frame = Union[bytes, bytearray, memoryview, Any]  # zmq.Frame is accepted too (has .bytes / buffer)

_MAX_BODY_BYTES = 4 * 1024 * 1024  # bodies are metadata; audio rides in the payload frame


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    """One decoded message: command, validated body and optional raw payload."""

    command: Command
    body: Body
    payload: Optional[bytes] = None


def encode(command: Command, body: Union[Body, dict[str, Any]], payload: Optional[bytes] = None) -> list[bytes]:
    """Frames for a DEALER peer to send (prepend the routing id on a ROUTER)."""
    if isinstance(body, dict):
        body = BODY_TYPES[command].model_validate(body)
    if payload is not None and command not in PAYLOAD_COMMANDS:
        raise ValueError(f"{command.name} carries no payload")
    frames = [b"", command.side.value, bytes((command.value,)), pack_body(body)]
    if payload is not None:
        frames.append(payload)
    return frames


def pack_body(body: Body) -> bytes:
    return msgpack.packb(body.to_wire(), use_bin_type=True)


def _to_bytes(frame: Frame) -> bytes:
    if isinstance(frame, bytes):
        return frame
    if hasattr(frame, "bytes"):
        return frame.bytes  # zmq.Frame
    return bytes(frame)


def decode(frames: Sequence[Frame], *, side: Side, to_broker: bool) -> Message:
    """Validate and decode frames (without a routing id) sent in the given direction.

    Raises ProtocolError, carrying the command and job/request id when they could be read.
    """
    if not 4 <= len(frames) <= 5:
        raise ProtocolError(f"expected 4 or 5 frames, got {len(frames)}")
    delimiter, header, command_frame, body_frame = (_to_bytes(f) for f in frames[:4])
    if delimiter:
        raise ProtocolError("frame 0 must be empty")
    if header != side.value:
        raise ProtocolError(f"bad protocol header {header[:16]!r}, expected {side.value!r}")
    if len(command_frame) != 1:
        raise ProtocolError("command frame must be exactly one byte")
    try:
        command = Command(command_frame[0])
    except ValueError:
        raise ProtocolError(f"unknown command 0x{command_frame[0]:02x}") from None
    if command.side is not side or command.to_broker is not to_broker:
        raise ProtocolError(f"command {command.name} not allowed here", command=command)
    raw = _unpack_map(body_frame, command)
    ids = {k: raw.get(k) if isinstance(raw.get(k), str) else None for k in ("job_id", "req_id")}
    payload: Optional[bytes] = None
    if len(frames) == 5:
        if command not in PAYLOAD_COMMANDS:
            raise ProtocolError(f"{command.name} takes no payload frame", command=command, **ids)
        payload = _to_bytes(frames[4])
    elif command in PAYLOAD_COMMANDS:
        raise ProtocolError(f"{command.name} needs a payload frame", command=command, **ids)
    try:
        body = BODY_TYPES[command].model_validate(raw)
    except ValidationError as exc:
        raise ProtocolError(
            f"invalid {command.name} body: {_summarise(exc)}", command=command, **ids
        ) from exc
    return Message(command, body, payload)


def _unpack_map(data: bytes, command: Command) -> dict[str, Any]:
    if len(data) > _MAX_BODY_BYTES:
        raise ProtocolError(f"{command.name} body too large ({len(data)} bytes)", command=command)
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
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")
