"""A queue message as a job (tts_bridge.message), and `tts bridge` without its extra."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tts_bridge.errors import MalformedJob
from tts_bridge.message import decode_json, from_stream_fields, job_id_from, parse_job
from tts_bridge.runner import JobRunner
from tts_bridge.settings import BridgeSettings
from tts_bridge.stats import BridgeStats
from tts_client.settings import ClientSettings

from harness import ROOT


def _parse(obj: dict, **kw: object) -> object:
    return parse_job(obj, default_id="d", job_id="j", max_text_chars=100, **kw)  # type: ignore[arg-type]


@pytest.mark.unit
def test_the_batch_line_keys_make_a_job() -> None:
    job = _parse({"text": "Hi.", "speaker": "s", "id": 7, "model": "tone", "voice": {"length_scale": 2},
                  "stream_index": 3, "tenant": "acme"}, tenant_field="tenant")
    assert (job.text, job.speaker, job.line_id, job.model, job.voice, job.stream_index, job.tenant) == \
        ("Hi.", "s", "7", "tone", {"length_scale": 2}, "3", "acme")
    assert _parse({"text": "Hi."}).line_id == "d"


@pytest.mark.unit
@pytest.mark.parametrize(("obj", "reason"), [
    ({}, '"text" is missing'),
    ({"text": "   "}, '"text" is missing'),
    ({"text": "x" * 101}, "101 characters; the limit is 100"),
    ({"text": "Hi", "speaker": 3}, '"speaker" must be a string'),
    ({"text": "Hi", "model": ""}, '"model" must be a non-empty string'),
    ({"text": "Hi", "voice": [1]}, '"voice" must be an object'),
    ({"text": "Hi", "id": [1]}, '"id" must be a string or an integer'),
])
def test_malformed_messages_say_why(obj: dict, reason: str) -> None:
    with pytest.raises(MalformedJob, match=reason.replace("(", r"\(")):
        _parse(obj)


@pytest.mark.unit
def test_json_bodies_and_stream_fields() -> None:
    with pytest.raises(MalformedJob, match="not valid JSON"):
        decode_json(b"{nope")
    with pytest.raises(MalformedJob, match="not a JSON object"):
        decode_json(b"[1]")
    with pytest.raises(MalformedJob, match="not valid JSON"):
        decode_json(b"\xff\xfe")
    assert from_stream_fields({"text": "a", "voice": '{"x": 1}'}) == {"text": "a", "voice": {"x": 1}}
    assert from_stream_fields({"data": json.dumps({"text": "b", "id": 2})}) == {"text": "b", "id": 2}


@pytest.mark.unit
def test_job_ids_are_valid_and_stable() -> None:
    assert job_id_from("tts jobs", "1-0") == "tts_jobs:1-0"
    long = job_id_from("q" * 300)
    assert len(long) <= 128 and long == job_id_from("q" * 300) and long != job_id_from("q" * 299)


@pytest.mark.unit
def test_status_line_counts() -> None:
    stats = BridgeStats("redis-streams")
    stats.on_consumed()
    stats.start_job()
    stats.on_acked()
    stats.set_lag(5)
    line = stats.status_line()
    assert "consumed=1 in_flight=1 acked=1 answered=0 failed=0 lag=5" in line
    assert stats.registry.get_sample_value("tts_bridge_lag", {"bridge": "redis-streams"}) == 5


def test_one_broker_client_per_tenant(tmp_path: Path, dead_endpoint: str) -> None:
    """--tenant-field: each value gets its own client (its own socket, so the broker's fairness splits them)."""
    runner = JobRunner(ClientSettings(broker_url=dead_endpoint), BridgeSettings(output_dir=str(tmp_path)),
                       BridgeStats("t"))
    try:
        a, b, default = runner.client("acme"), runner.client("globex"), runner.client(None)
        assert len({id(a), id(b), id(default)}) == 3
        assert runner.client("acme") is a
        assert runner.client_settings.timeout_s == 0  # the queue holds the job: never give up on it
    finally:
        asyncio.run(runner.aclose())


def test_without_the_extra_one_line_names_it(tmp_path: Path) -> None:
    """A module named like each client library that refuses to import stands in for the missing extra."""
    for name in ("bullmq", "redis", "aio_pika"):
        (tmp_path / f"{name}.py").write_text(f"raise ImportError('no {name} here', name={name!r})\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    for kind in ("bullmq", "redis-streams", "amqp"):
        result = subprocess.run([sys.executable, "-m", "tts_client", "bridge", kind, "--output-dir", str(tmp_path)],
                                capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "pip install 'tts-broker[bridges]'" in lines[0], result.stderr
        assert "Traceback" not in result.stderr
