"""Every number and size a peer sends has a ceiling (PROTOCOL.md section 3, Limits), with a specific code."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from tts_protocol import Command, ErrorCode, ProtocolError, Side, decode
from tts_protocol.constants import CLIENT_HEADER, WORKER_HEADER
from tts_protocol.messages import MAX_ATTEMPT, MAX_CAPACITY, MAX_DURATION_MS, Heartbeat

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]


def to_broker(command: Command, body: dict[str, Any], payload: bytes | None = None) -> ProtocolError:
    header = CLIENT_HEADER if command.side is Side.CLIENT else WORKER_HEADER
    frames = [header + bytes((command,)), msgpack.packb(body, use_bin_type=True)]
    if payload is not None:
        frames.append(payload)
    with pytest.raises(ProtocolError) as caught:
        decode(frames, side=command.side, to_broker=True)
    return caught.value


@pytest.mark.parametrize("field", ["timeout_ms", "deadline_ms"])
@pytest.mark.parametrize("value", [2**64 - 1, 2**63, MAX_DURATION_MS + 1])
def test_durations_past_seven_days_are_out_of_range(field: str, value: int) -> None:
    exc = to_broker(Command.SUBMIT, {"job_id": "j1", "text": "hi", field: value})
    assert exc.code is ErrorCode.OUT_OF_RANGE and exc.job_id == "j1" and field in str(exc)


def test_negative_numbers_are_out_of_range() -> None:
    assert to_broker(Command.SUBMIT, {"job_id": "j1", "text": "hi", "timeout_ms": -1}).code is ErrorCode.OUT_OF_RANGE


@pytest.mark.parametrize(("command", "body"), [
    (Command.W_RESULT, {"job_id": "j", "attempt": MAX_ATTEMPT + 1, "sample_rate": 16000}),
    (Command.W_RESULT, {"job_id": "j", "attempt": 1, "sample_rate": 10**9}),
    (Command.W_PARTIAL, {"job_id": "j", "attempt": 1, "seq": 2**40, "sample_rate": 16000}),
    (Command.W_FAIL, {"job_id": "j", "attempt": 0, "code": "x"}),
    (Command.W_READY, {"worker_id": "w", "engine": "tone", "capacity": MAX_CAPACITY + 1}),
    (Command.W_READY, {"worker_id": "w", "engine": "tone", "load_time_ms": 2**64 - 1}),
])
def test_worker_numbers_have_ceilings(command: Command, body: dict[str, Any]) -> None:
    payload = b"\x00\x00" if command in (Command.W_RESULT, Command.W_PARTIAL) else None
    assert to_broker(command, body, payload).code is ErrorCode.OUT_OF_RANGE


def test_an_oversized_string_is_too_large() -> None:
    exc = to_broker(Command.SUBMIT, {"job_id": "j1", "text": "x" * 1_000_001})
    assert exc.code is ErrorCode.TOO_LARGE


def test_an_id_too_long_to_echo_is_not_echoed_but_the_error_still_says_why() -> None:
    exc = to_broker(Command.JOB_STATUS, {"req_id": "r" * 300, "job_id": "j" * 5000})
    assert (exc.job_id, exc.req_id) == (None, None) and "job_id" in str(exc) and len(str(exc)) < 1000
    exc = to_broker(Command.JOB_STATUS, {"req_id": "r" * 200, "job_id": "j" * 200})
    assert exc.req_id == "r" * 200 and exc.job_id == "j" * 200  # invalid, but short enough to echo


@pytest.mark.parametrize("model", ["tone\nINFO forged line", "a\rb", "nul\x00", "esc\x1b[31m"])
def test_names_that_end_up_in_logs_carry_no_control_characters(model: str) -> None:
    assert to_broker(Command.RELOAD, {"req_id": "r1", "model": model}).code is ErrorCode.PROTOCOL
    assert to_broker(Command.SUBMIT, {"job_id": "j1", "text": "hi", "speaker": model}).code is ErrorCode.PROTOCOL
    assert to_broker(Command.W_READY, {"worker_id": "w", "engine": model}).code is ErrorCode.PROTOCOL


def test_malformed_keys_are_escaped_in_the_message() -> None:
    exc = to_broker(Command.SUBMIT, {"job_id": "j1", "text": "hi", "voice": {"k\nforged": b"\xff"}})
    assert "\n" not in str(exc)


@pytest.mark.parametrize("stats", [
    {"engine": {"blob": b"\xff\xfe not utf-8"}},
    {"deep": [[[[[[[1]]]]]]]},
    {"wide": list(range(300))},
    {"long": "x" * 2000},
    {"big": 2**64},
])
def test_heartbeat_stats_stay_small_plain_data(stats: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Heartbeat(stats=stats)


def test_non_utf8_strings_in_heartbeat_stats_are_a_protocol_error() -> None:
    raw = msgpack.packb({"stats": {"k": "v"}}, use_bin_type=True).replace(b"\xa1v", b"\xa1\xff")
    frames = [WORKER_HEADER + bytes((Command.W_HEARTBEAT,)), raw]
    with pytest.raises(ProtocolError):
        decode(frames, side=Side.WORKER, to_broker=True)


def test_the_worker_s_own_heartbeat_shape_is_accepted() -> None:
    stats = {"jobs_done": 3, "mean_gen_ms": 1.5, "rss_bytes": 2**40, "warm": [f"s{i}" for i in range(256)],
             "engine": {"a": {"b": {"c": [1, 2.0, None, True, "x" * 1024]}}}, "gpu_mem_bytes": 2**64 - 1}
    assert Heartbeat(stats=stats).stats == stats
