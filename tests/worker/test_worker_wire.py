"""The worker's side of the wire in-process: heartbeat stats always pack; only typed bodies go out."""

from __future__ import annotations

import math
from typing import Any, Iterator

import numpy as np
import pytest
import zmq

from tts_protocol import Command, ErrorCode, Side, decode, encode
from tts_protocol.messages import Disconnect, Fail, Heartbeat, Ready

from tts_worker.connection import BrokerConnection
from tts_worker.stats import MAX_WARM, WorkerStats

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]

WORKER_KEYS = {"jobs_done", "jobs_failed", "mean_gen_ms", "rss_bytes", "cpu_percent", "load_time_ms", "busy",
               "uptime_s", "warm", "engine"}


def round_trip(stats: dict[str, Any]) -> dict[str, Any]:
    """What the broker decodes from a HEARTBEAT carrying `stats`."""
    frames = encode(Command.W_HEARTBEAT, Heartbeat(stats=stats))
    body = decode(frames, side=Side.WORKER, to_broker=True).body
    assert isinstance(body, Heartbeat)
    return body.stats


def deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for i in range(levels):
        value = {f"level{i}": value}
    return value


def test_worker_figures_are_numbers_strings_and_a_list_of_str() -> None:
    stats = WorkerStats()
    stats.load_time_ms = 1234
    stats.record_done(100)
    stats.record_done(301)
    stats.record_failed()
    beat = stats.heartbeat(busy=2, engine_stats={"jobs": 3, "warm": ["amy", "joe"]})
    assert WORKER_KEYS <= set(beat) <= WORKER_KEYS | {"gpu_mem_bytes", "reload_error"}
    assert (beat["jobs_done"], beat["jobs_failed"], beat["mean_gen_ms"], beat["busy"]) == (2, 1, 200.5, 2)
    assert beat["load_time_ms"] == 1234 and beat["rss_bytes"] > 0 and beat["warm"] == ["amy", "joe"]
    assert isinstance(beat["cpu_percent"], float) and beat["cpu_percent"] >= 0
    assert beat["engine"] == {"jobs": 3}
    for key, value in beat.items():
        if key == "engine":
            continue
        assert isinstance(value, (int, float, str)) or (isinstance(value, list) and all(isinstance(v, str)
                                                                                       for v in value)), key
    assert round_trip(beat) == beat
    stats.reload_error = "engine tone: unknown option 'x'"
    assert round_trip(stats.heartbeat(busy=0, engine_stats={}))["reload_error"] == stats.reload_error


class Opaque:
    def __str__(self) -> str:
        return "<opaque>"


def test_hostile_engine_stats_still_pack() -> None:
    engine_stats: dict[Any, Any] = {
        "huge": 2**70, "negative_huge": -(2**70), "uint64_max": 2**64 - 1, "nan": math.nan, "inf": -math.inf,
        "bytes": b"\xff\x00", "object": Opaque(), "nested": deep(6), "set": {3}, "tuple": (1, "two", 3.0),
        1: "int key", None: "none key", ("a", "b"): "tuple key", "np_int": np.int64(7), "np_float": np.float32(0.5),
        "np_array": np.arange(3), "long": "x" * 10_000, "gen": (i for i in range(3)),
        **{f"k{i}": i for i in range(100)},
        "warm": ["joe", 7, None] + [f"s{i}" for i in range(MAX_WARM + 50)],
    }
    beat = round_trip(WorkerStats().heartbeat(busy=0, engine_stats=engine_stats))
    engine = beat["engine"]
    assert beat["warm"][:3] == ["joe", "7", "None"] and len(beat["warm"]) == MAX_WARM
    assert len(engine) == 64  # the first 64 entries, the rest cut
    assert engine["huge"] == str(2**70) and engine["negative_huge"] == str(-(2**70))
    assert engine["uint64_max"] == 2**64 - 1
    assert engine["nan"] is None and engine["inf"] is None
    assert isinstance(engine["bytes"], str) and engine["object"] == "<opaque>"
    assert engine["set"] == [3] and engine["tuple"] == [1, "two", 3.0]
    assert engine["1"] == "int key" and engine["None"] == "none key" and engine["('a', 'b')"] == "tuple key"
    assert engine["np_int"] == 7 and engine["np_float"] == 0.5 and isinstance(engine["np_array"], str)
    assert len(engine["long"]) == 1024 and isinstance(engine["gen"], str)
    # Maps three deep at most (engine -> nested -> level5), then the rest as one string.
    assert list(engine["nested"]) == ["level5"] and list(engine["nested"]["level5"]) == ["level4"]
    assert engine["nested"]["level5"]["level4"] == str(deep(4))


@pytest.mark.parametrize("warm", ["joe", 5, {"joe": 1}, None])
def test_a_warm_entry_that_is_not_a_list_means_no_warm_speakers(warm: Any) -> None:
    assert round_trip(WorkerStats().heartbeat(busy=0, engine_stats={"warm": warm}))["warm"] == []


@pytest.mark.parametrize("engine_stats", [["not", "a", "map"], None, 42])
def test_engine_stats_that_are_not_a_map_become_an_error_entry(engine_stats: Any) -> None:
    beat = round_trip(WorkerStats().heartbeat(busy=0, engine_stats=engine_stats))
    assert beat["warm"] == [] and "not a map" in beat["engine"]["stats_error"]


@pytest.fixture
def connection() -> Iterator[BrokerConnection]:
    context = zmq.Context()
    conn = BrokerConnection(context, "tcp://127.0.0.1:1", timeout_s=3.0, backoff_min_s=0.1, backoff_max_s=1.0)
    try:
        yield conn
    finally:
        conn.close()
        context.term()


def test_send_takes_only_the_model_its_command_carries(connection: BrokerConnection) -> None:
    fail = Fail(job_id="j", attempt=1, code=ErrorCode.CANCELLED)
    with pytest.raises(TypeError, match="W_FAIL carries Fail, not dict"):
        connection.send(Command.W_FAIL, {"job_id": "j", "attempt": 1, "code": "cancelled"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="W_READY carries Ready, not Fail"):
        connection.send(Command.W_READY, fail)
    with pytest.raises(TypeError, match="not a worker-to-broker command"):
        connection.send(Command.B_DISCONNECT, Disconnect(reason="x"))
    with pytest.raises(TypeError, match="not a worker-to-broker command"):
        connection.send(Command.SUBMIT, fail)
    assert not connection.connected
    assert connection.send(Command.W_FAIL, fail) is False  # well-typed, but no socket yet
    assert connection.send(Command.W_READY, Ready(worker_id="w-1", engine="tone")) is False


def test_error_codes_go_out_as_their_protocol_strings() -> None:
    frames = encode(Command.W_FAIL, Fail(job_id="j", attempt=2, code=ErrorCode.SHUTTING_DOWN, retryable=True))
    body = decode(frames, side=Side.WORKER, to_broker=True).body
    assert isinstance(body, Fail) and body.code == "shutting_down" and type(body.code) is str and body.retryable
