"""`tts bridge redis-streams` against a real redis-server, a real broker and tone workers.

The producer is redis-py (XADD), the way a Python shop adds work. Each test uses its own stream names.
"""

from __future__ import annotations

import json
import secrets
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import pytest
import redis

from bridgekit import BRIDGE_JOBS, RedisServer, check_audio, job_text, syntheses
from harness import BrokerProc, Proc, wait_for

pytestmark = pytest.mark.timeout(240)

JOBS = BRIDGE_JOBS


def _names() -> dict[str, str]:
    tag = secrets.token_hex(4)
    return {"stream": f"t{tag}:jobs", "results": f"t{tag}:results", "group": "tts-broker", "tag": tag}


def _produce(r: redis.Redis, stream: str, tag: str, count: int, start: int = 0) -> dict[str, str]:
    """XADD `count` jobs; {line id: text}."""
    texts = {}
    pipe = r.pipeline(transaction=False)
    for i in range(start, start + count):
        line_id = f"{tag}-{i}"
        texts[line_id] = job_text(i, tag)
        pipe.xadd(stream, {"text": texts[line_id], "id": line_id})
    pipe.execute()
    return texts


def _results(r: redis.Redis, stream: str) -> list[dict[str, str]]:
    return [fields for _id, fields in r.xrange(stream)]


def _bridge_args(server: RedisServer, n: dict[str, str], *extra: str) -> list[str]:
    return ["--redis", server.url, "--stream", n["stream"], "--results", n["results"], "--group", n["group"],
            *extra]


def _check_all(r: redis.Redis, n: dict[str, str], texts: dict[str, str]) -> None:
    results = _results(r, n["results"])
    counts = Counter(res["id"] for res in results)
    assert set(counts) == set(texts), f"missing: {sorted(set(texts) - set(counts))[:5]}"
    twice = [k for k, c in counts.items() if c > 1]
    assert not twice, f"answered more than once: {twice[:5]}"
    for res in results:
        assert res["status"] == "done", res
        check_audio(res, texts[res["id"]])
    assert r.hlen(f"{n['stream']}:inflight") == 0
    assert r.xpending(n["stream"], n["group"])["pending"] == 0


@pytest.fixture
def rdb(redis_server: RedisServer) -> Any:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    client.close()


def test_streams_jobs_come_back_with_correct_audio(redis_server: RedisServer, rdb: redis.Redis, stack: BrokerProc,
                                                    start_bridge: Callable[..., Proc]) -> None:
    n = _names()
    texts = _produce(rdb, n["stream"], n["tag"], JOBS)  # added before the bridge made its group: read from 0
    bridge = start_bridge(stack, "redis-streams", *_bridge_args(redis_server, n))
    wait_for(lambda: rdb.xlen(n["results"]) >= JOBS, 120, interval_s=0.2, what=f"{JOBS} results")
    _check_all(rdb, n, texts)
    assert syntheses(stack) == JOBS
    metrics = urllib.request.urlopen(bridge.ready["metrics"], timeout=5).read().decode()
    for name in ("consumed", "acked", "answered"):
        assert f'tts_bridge_{name}_total{{bridge="redis-streams"}} {JOBS}.0' in metrics, metrics
    assert 'tts_bridge_failed_total{bridge="redis-streams"} 0.0' in metrics
    wait_for(lambda: f"answered={JOBS} failed=0" in bridge.log(), 10, what="a status line")


def test_streams_bridge_killed_halfway_every_job_answered_once(redis_server: RedisServer, rdb: redis.Redis,
                                                                stack: BrokerProc,
                                                                start_bridge: Callable[..., Proc]) -> None:
    n = _names()
    args = _bridge_args(redis_server, n, "--dead-after-s", "2", "--max-in-flight", "16")
    first = start_bridge(stack, "redis-streams", *args)
    texts = _produce(rdb, n["stream"], n["tag"], JOBS)
    wait_for(lambda: rdb.xlen(n["results"]) >= JOBS // 2, 120, interval_s=0.05, what="half the results")
    first.kill()  # SIGKILL: pending entries and in-flight records stay behind
    start_bridge(stack, "redis-streams", *args)
    wait_for(lambda: rdb.xlen(n["results"]) >= JOBS, 120, interval_s=0.2, what=f"{JOBS} results")
    _check_all(rdb, n, texts)
    assert syntheses(stack) == JOBS, "a job was synthesised twice"


def test_streams_redis_restart_mid_run_loses_nothing(redis_server: RedisServer, rdb: redis.Redis,
                                                      stack: BrokerProc, start_bridge: Callable[..., Proc]) -> None:
    n = _names()
    bridge = start_bridge(stack, "redis-streams", *_bridge_args(redis_server, n, "--max-in-flight", "16"))
    texts = _produce(rdb, n["stream"], n["tag"], JOBS)
    wait_for(lambda: rdb.xlen(n["results"]) >= JOBS // 3, 120, interval_s=0.05, what="a third of the results")
    redis_server.restart()
    wait_for(lambda: _safe_len(rdb, n["results"]) >= JOBS, 120, interval_s=0.2, what=f"{JOBS} results")
    assert bridge.alive()
    _check_all(rdb, n, texts)
    assert syntheses(stack) == JOBS
    assert "redis unavailable" in bridge.log() or "retrying" in bridge.log()


def _safe_len(r: redis.Redis, stream: str) -> int:
    try:
        return int(r.xlen(stream))
    except redis.ConnectionError:
        return 0


def test_streams_malformed_messages_are_dead_lettered(redis_server: RedisServer, rdb: redis.Redis,
                                                       stack: BrokerProc, start_bridge: Callable[..., Proc],
                                                       tmp_path: Path) -> None:
    n = _names()
    bridge = start_bridge(stack, "redis-streams", *_bridge_args(redis_server, n))
    bad = {
        "not-json": {"data": "{this is not json", "id": "not-json"},
        "no-text": {"speaker": "x", "id": "no-text"},
        "huge": {"text": "x" * (10 * 1024 * 1024), "id": "huge"},
        "unknown-model": {"text": "Hello there", "model": "no-such-engine", "id": "unknown-model"},
        "bad-voice": {"text": "Hello there", "voice": "[1, 2", "id": "bad-voice"},
    }
    for fields in bad.values():
        rdb.xadd(n["stream"], fields)
    good = _produce(rdb, n["stream"], n["tag"], 3)
    wait_for(lambda: rdb.xlen(n["results"]) >= len(bad) + 3, 60, interval_s=0.1, what="all answers")
    answers = {res["id"]: res for res in _results(rdb, n["results"])}
    reasons = {key: answers[key]["error"] for key in bad}
    assert all(answers[key]["status"] == "failed" for key in bad)
    assert "not valid JSON" in reasons["not-json"]
    assert '"text" is missing' in reasons["no-text"]
    assert "10485760 characters" in reasons["huge"] and "limit is 20000" in reasons["huge"]
    assert "unknown model 'no-such-engine'" in reasons["unknown-model"]
    assert '"voice"' in reasons["bad-voice"]
    dead = {fields["dead_entry_id"]: fields for _id, fields in rdb.xrange(f"{n['stream']}:dead")}
    assert len(dead) == len(bad)
    assert sorted(f["dead_reason"] for f in dead.values()) == sorted(reasons.values())
    for key in good:
        assert answers[key]["status"] == "done"
        check_audio(answers[key], good[key])
    assert bridge.alive()
    assert rdb.xpending(n["stream"], n["group"])["pending"] == 0
    assert json.dumps(reasons)  # the reasons are one-line strings
    assert all("\n" not in r for r in reasons.values())
