"""Failover drills on a real PostgreSQL journal: a standby takes over from a killed active broker while a live
client keeps submitting, and two brokers started at once elect one active."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Callable

import pytest

from tts_client import TtsClient

from conftest_failover import PgBroker, endpoint_list, pg_brokers, tone_worker_on  # noqa: F401  (fixtures)
from harness import Proc, free_port, tone_frames, wait_for

pytestmark = pytest.mark.timeout(180)


def test_kill_9_of_the_active_during_1000_jobs_loses_nothing(
        pg_brokers: Callable[..., PgBroker], tone_worker_on: Callable[..., Proc],
        make_client: Callable[..., TtsClient]) -> None:
    a = pg_brokers("a").start().wait_active()
    b = pg_brokers("b").start().wait_standby()
    assert not b.active()
    # 10 ms a job: both slots hold a job at any moment of the run, so the kill always leaves some in the
    # workers' hands for the new active to adopt (with no latency a loaded machine could kill the active
    # while both workers waited for it, and nothing was there to adopt).
    workers = tone_worker_on(endpoint_list(a, b, side="backend"), concurrency=2, latency_s=0.01)
    client = make_client(endpoint_list(a, b), timeout_s=120.0)
    texts = [f"failover job {i}." for i in range(1000)]
    handles = [client.submit(text) for text in texts]
    wait_for(lambda: sum(h.done() for h in handles) >= 300, 90, what="300 results before the kill")
    assert a.proc is not None
    killed_at = time.monotonic()
    a.proc.signal(signal.SIGKILL)
    b.wait_active(timeout_s=15)
    took_over_s = time.monotonic() - killed_at
    results = [h.result() for h in handles]
    assert len({r.job_id for r in results}) == 1000
    for text, result in zip(texts, results, strict=True):
        assert result.sample_rate == 16000 and result.num_frames == tone_frames(text), text
    assert took_over_s < 10, f"standby took {took_over_s:.1f} s to take over"
    b_log = b.proc.log() if b.proc else ""
    assert "this broker is active now (epoch 2)" in b_log
    # The workers survived: what they had in hand at the kill was adopted by the new active, not run again.
    leased = re.findall(r"job (\S+) attempt \d+: leased", workers.log())
    assert len(leased) == len(set(leased)) == 1000, [j for j in set(leased) if leased.count(j) > 1]
    assert re.search(r"adopted from surviving worker", b_log), b_log[-3000:]


def test_two_brokers_started_at_once_elect_one_active(pg_brokers: Callable[..., PgBroker],
                                                      make_client: Callable[..., TtsClient]) -> None:
    a, b = pg_brokers("a").start(), pg_brokers("b").start()
    wait_for(lambda: a.active() or b.active(), 30, what="one broker active")
    active, standby = (a, b) if a.active() else (b, a)
    standby.wait_standby()
    assert not standby.active()
    assert make_client(endpoint_list(a, b)).ping(timeout_s=10).broker_id


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def test_status_and_health_follow_the_role(pg_brokers: Callable[..., PgBroker],
                                           make_client: Callable[..., TtsClient]) -> None:
    port_a, port_b = free_port(), free_port()
    a = pg_brokers("a", "--http", f"127.0.0.1:{port_a}").start().wait_active()
    b = pg_brokers("b", "--http", f"127.0.0.1:{port_b}").start().wait_standby()
    wait_for(lambda: http_get(f"http://127.0.0.1:{port_b}/healthz")[0] == 503, 20, what="standby health 503")
    code, body = http_get(f"http://127.0.0.1:{port_b}/api/status")
    assert code == 503 and json.loads(body)["role"] == "standby"
    assert http_get(f"http://127.0.0.1:{port_a}/healthz")[0] == 200
    status = json.loads(http_get(f"http://127.0.0.1:{port_a}/api/status")[1])
    assert (status["role"], status["epoch"]) == ("active", 1) and status["since"] > 0
    cli = subprocess.run([sys.executable, "-m", "tts_client", "--broker", endpoint_list(a, b), "status", "--json"],
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    assert (json.loads(cli.stdout)["role"], json.loads(cli.stdout)["epoch"]) == ("active", 1)
    assert a.proc is not None
    a.proc.signal(signal.SIGKILL)
    b.wait_active()
    wait_for(lambda: http_get(f"http://127.0.0.1:{port_b}/healthz")[0] == 200, 20, what="new active health 200")
    status = json.loads(http_get(f"http://127.0.0.1:{port_b}/api/status")[1])
    assert (status["role"], status["epoch"]) == ("active", 2)
    human = subprocess.run([sys.executable, "-m", "tts_client", "--broker", endpoint_list(a, b), "status"],
                           capture_output=True, text=True, timeout=60)
    assert "role active, epoch 2" in human.stdout, human.stdout + human.stderr
