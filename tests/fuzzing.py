"""Hypothesis strategies for fuzzing TTSP/2 receivers: random frames, and plausible bodies with bad values.

Frames are built by hand here on purpose (every other test goes through tts_protocol.encode): the point is
to send what encode would never make. "Plausible" bodies use the real field names of the command's model
with values drawn from boundary integers (2**64-1, 2**63, -1, just past each documented limit), wrong types,
non-UTF-8 bytes, control characters, long strings and nested containers, so validation is hit field by field.
"""

from __future__ import annotations

import time
from typing import Any, Optional

import msgpack
from hypothesis import strategies as st

from tts_protocol.constants import CLIENT_HEADER, PAYLOAD_COMMANDS, WORKER_HEADER, Command, Side
from tts_protocol.messages import (
    BODY_TYPES,
    MAX_ATTEMPT,
    MAX_CAPACITY,
    MAX_COUNT,
    MAX_DURATION_MS,
    MAX_SAMPLE_RATE,
)

BOUNDARY_INTS = [0, 1, -1, 2, 255, 256, 2**31 - 1, 2**31, 2**32, MAX_COUNT, MAX_COUNT + 1, 2**63 - 1, 2**63,
                 2**64 - 1, -(2**63), MAX_DURATION_MS, MAX_DURATION_MS + 1, MAX_ATTEMPT, MAX_ATTEMPT + 1,
                 MAX_CAPACITY, MAX_CAPACITY + 1, MAX_SAMPLE_RATE, MAX_SAMPLE_RATE + 1]

ints = st.one_of(st.sampled_from(BOUNDARY_INTS), st.integers(min_value=-(2**63), max_value=2**64 - 1))
texts = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["tone", "tone:v1", "high", "normal", "queued", "s16le", "a\nforged log line", "\x00", ""]),
    st.builds(lambda n: "x" * n, st.sampled_from([129, 257, 1025, 4097, 20_001])),
)
scalars = st.one_of(ints, texts, st.binary(max_size=24), st.booleans(), st.none(),
                    st.floats(allow_nan=True, allow_infinity=True))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=6),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=6)),
                      max_leaves=20)


def to_broker_commands(side: Side) -> list[Command]:
    return [c for c in Command if c.side is side and c.to_broker]


def field_names(command: Command) -> list[str]:
    return list(BODY_TYPES[command].model_fields)


@st.composite
def plausible_body(draw: st.DrawFn, command: Command, valid: dict[str, Any]) -> dict[str, Any]:
    """A body for `command`: some fields valid (from `valid`), some bad, some missing, maybe extra keys."""
    body: dict[str, Any] = {}
    for name in field_names(command):
        choice = draw(st.sampled_from(["valid", "valid", "bad", "missing"]))
        if choice == "valid" and name in valid:
            body[name] = valid[name]
        elif choice != "missing":
            body[name] = draw(values)
    if draw(st.booleans()):
        body.update(draw(st.dictionaries(st.text(max_size=8), values, max_size=2)))
    return body


@st.composite
def frames_for(draw: st.DrawFn, side: Side, valid: dict[str, Any],
               commands: Optional[list[Command]] = None) -> list[bytes]:
    """Frames as a DEALER peer on `side` would send them to the broker, garbage or plausible."""
    header = CLIENT_HEADER if side is Side.CLIENT else WORKER_HEADER
    commands = commands or to_broker_commands(side)
    kind = draw(st.sampled_from(["plausible", "plausible", "plausible", "raw_body", "raw_frames"]))
    if kind == "raw_frames":
        return draw(st.lists(st.binary(max_size=64), min_size=1, max_size=6))
    command = draw(st.sampled_from(commands))
    if kind == "raw_body":
        body = draw(st.binary(max_size=256))
    else:
        fields = draw(plausible_body(command, valid))
        body = msgpack.packb(fields, use_bin_type=True)
    frames = [header + bytes((command,)), body]
    if command in PAYLOAD_COMMANDS or draw(st.integers(0, 9)) == 0:
        frames.append(draw(st.binary(max_size=64)))
    return frames


class Budget:
    """A time budget shared by the examples of one hypothesis test: once spent, examples return at once."""

    def __init__(self, seconds: float) -> None:
        self.until = time.monotonic() + seconds
        self.cases = 0

    def spend(self) -> bool:
        """True while there is time left (and counts the case)."""
        if time.monotonic() >= self.until:
            return False
        self.cases += 1
        return True
