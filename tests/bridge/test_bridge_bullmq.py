"""`tts bridge bullmq` against a real redis-server, with jobs added by the `bullmq` npm package from Node (a
Node backend's `queue.add`), a real broker and tone workers. Results are read back through Node too."""

from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path
from typing import Any, Callable

import pytest
import redis

from bridgekit import BRIDGE_JOBS, RedisServer, check_audio, job_text, syntheses
from harness import BrokerProc, Proc, wait_for

pytestmark = pytest.mark.timeout(240)

JOBS = BRIDGE_JOBS


def _node(node_dir: Path, *args: str) -> str:
    result = subprocess.run(["node", str(node_dir / "produce.mjs"), *args], capture_output=True, text=True,
                            timeout=120, cwd=node_dir)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _add(node_dir: Path, server: RedisServer, queue: str, jobs: list[dict[str, Any]], tmp_path: Path) -> None:
    file = tmp_path / f"jobs-{secrets.token_hex(3)}.json"
    file.write_text(json.dumps(jobs))
    assert json.loads(_node(node_dir, "add", server.url, queue, str(file)))["added"] == len(jobs)


def _jobs(tag: str, count: int) -> tuple[list[dict[str, Any]], dict[str, str]]:
    jobs, texts = [], {}
    for i in range(count):
        job_id = f"{tag}-{i}"
        texts[job_id] = job_text(i, tag)
        jobs.append({"name": "speak", "data": {"text": texts[job_id], "id": job_id},
                     "opts": {"jobId": job_id, "attempts": 5, "backoff": {"type": "fixed", "delay": 200}}})
    return jobs, texts


def _results(node_dir: Path, server: RedisServer, queue: str) -> dict[str, dict[str, Any]]:
    lines = [json.loads(line) for line in _node(node_dir, "results", server.url, queue).splitlines() if line]
    return {job["id"]: job for job in lines}


def _finished(r: redis.Redis, queue: str) -> int:
    try:
        return int(r.zcard(f"bull:{queue}:completed")) + int(r.zcard(f"bull:{queue}:failed"))
    except redis.ConnectionError:
        return 0


def _check_all(node_dir: Path, server: RedisServer, queue: str, texts: dict[str, str]) -> None:
    jobs = _results(node_dir, server, queue)
    assert set(jobs) == set(texts)
    not_done = {k: (v["state"], v["failedReason"]) for k, v in jobs.items() if v["state"] != "completed"}
    assert not not_done, list(not_done.items())[:5]
    for job_id, job in jobs.items():
        check_audio(job["returnvalue"], texts[job_id])
        assert job["progress"] == 100


@pytest.fixture
def rdb(redis_server: RedisServer) -> Any:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    client.close()


def test_bullmq_jobs_from_node_come_back_with_correct_audio(redis_server: RedisServer, rdb: redis.Redis,
                                                             bullmq_node: Path, stack: BrokerProc,
                                                             start_bridge: Callable[..., Proc],
                                                             tmp_path: Path) -> None:
    tag = secrets.token_hex(4)
    queue = f"tts-{tag}"
    jobs, texts = _jobs(tag, JOBS)
    _add(bullmq_node, redis_server, queue, jobs, tmp_path)
    start_bridge(stack, "bullmq", "--redis", redis_server.url, "--queue", queue)
    wait_for(lambda: _finished(rdb, queue) >= JOBS, 120, interval_s=0.2, what=f"{JOBS} finished jobs")
    _check_all(bullmq_node, redis_server, queue, texts)
    assert syntheses(stack) == JOBS


def test_bullmq_bridge_killed_halfway_every_job_answered_once(redis_server: RedisServer, rdb: redis.Redis,
                                                               bullmq_node: Path, stack: BrokerProc,
                                                               start_bridge: Callable[..., Proc],
                                                               tmp_path: Path) -> None:
    tag = secrets.token_hex(4)
    queue = f"tts-{tag}"
    args = ["--redis", redis_server.url, "--queue", queue, "--dead-after-s", "2", "--max-in-flight", "16"]
    first = start_bridge(stack, "bullmq", *args)
    jobs, texts = _jobs(tag, JOBS)
    _add(bullmq_node, redis_server, queue, jobs, tmp_path)
    wait_for(lambda: _finished(rdb, queue) >= JOBS // 2, 120, interval_s=0.05, what="half the jobs")
    first.kill()  # its active jobs keep their locks until they lapse, then BullMQ hands them out again
    start_bridge(stack, "bullmq", *args)
    wait_for(lambda: _finished(rdb, queue) >= JOBS, 120, interval_s=0.2, what=f"{JOBS} finished jobs")
    _check_all(bullmq_node, redis_server, queue, texts)
    assert syntheses(stack) == JOBS, "a job was synthesised twice"


def test_bullmq_redis_restart_mid_run_loses_nothing(redis_server: RedisServer, rdb: redis.Redis,
                                                    bullmq_node: Path, stack: BrokerProc,
                                                    start_bridge: Callable[..., Proc], tmp_path: Path) -> None:
    tag = secrets.token_hex(4)
    queue = f"tts-{tag}"
    bridge = start_bridge(stack, "bullmq", "--redis", redis_server.url, "--queue", queue, "--dead-after-s", "2",
                          "--max-in-flight", "16")
    jobs, texts = _jobs(tag, JOBS)
    _add(bullmq_node, redis_server, queue, jobs, tmp_path)
    wait_for(lambda: _finished(rdb, queue) >= JOBS // 3, 120, interval_s=0.05, what="a third of the jobs")
    redis_server.restart()
    wait_for(lambda: _finished(rdb, queue) >= JOBS, 180, interval_s=0.2, what=f"{JOBS} finished jobs")
    assert bridge.alive()
    _check_all(bullmq_node, redis_server, queue, texts)
    assert syntheses(stack) == JOBS


def test_bullmq_malformed_jobs_fail_unrecoverably(redis_server: RedisServer, rdb: redis.Redis, bullmq_node: Path,
                                                  stack: BrokerProc, start_bridge: Callable[..., Proc],
                                                  tmp_path: Path) -> None:
    tag = secrets.token_hex(4)
    queue = f"tts-{tag}"
    bridge = start_bridge(stack, "bullmq", "--redis", redis_server.url, "--queue", queue)
    opts = {"attempts": 3}
    bad = [
        {"name": "speak", "data": "just a string, not a JSON object", "opts": {**opts, "jobId": "not-json"}},
        {"name": "speak", "data": {"speaker": "x"}, "opts": {**opts, "jobId": "no-text"}},
        {"name": "speak", "data": {"text": "x" * (10 * 1024 * 1024)}, "opts": {**opts, "jobId": "huge"}},
        {"name": "speak", "data": {"text": "Hello there", "model": "no-such-engine"},
         "opts": {**opts, "jobId": "unknown-model"}},
    ]
    good, texts = _jobs(tag, 3)
    _add(bullmq_node, redis_server, queue, bad + good, tmp_path)
    wait_for(lambda: _finished(rdb, queue) >= len(bad) + len(good), 60, interval_s=0.1, what="all jobs finished")
    jobs = _results(bullmq_node, redis_server, queue)
    reasons = {key: jobs[key]["failedReason"] for key in ("not-json", "no-text", "huge", "unknown-model")}
    assert all(jobs[key]["state"] == "failed" and jobs[key]["attemptsMade"] == 1 for key in reasons), jobs
    assert "not a JSON object" in reasons["not-json"]
    assert '"text" is missing' in reasons["no-text"]
    assert "10485760 characters" in reasons["huge"]
    assert "unknown model 'no-such-engine'" in reasons["unknown-model"]
    for job_id, text in texts.items():
        assert jobs[job_id]["state"] == "completed"
        check_audio(jobs[job_id]["returnvalue"], text)
    assert bridge.alive()
