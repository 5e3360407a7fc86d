"""`tts-broker --http`: /metrics parses and moves as jobs run, /api/status equals `tts status --json`, and the
HTTP side survives bad requests without touching the broker."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any, Callable
from urllib.parse import urlsplit

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tts_protocol import Command

from tts_client import TtsClient

from harness import ROOT, BrokerProc, Proc, wait_for
from peers import RawClient, RawWorker

pytestmark = pytest.mark.timeout(120)


def get(url: str, timeout_s: float = 10.0) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as reply:
            return reply.status, reply.headers.get("Content-Type", ""), reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


def samples(base: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of /metrics by (name, labels), parsed with prometheus-client's own parser."""
    status, content_type, text = get(base + "metrics")
    assert status == 200 and content_type.startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def total(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """Sum over every series of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in found.items() if n == name and want <= ls)


def test_metrics_counters_and_gauges_move_as_jobs_run(broker_factory: Callable[..., BrokerProc], tone_workers,
                                                     make_client: Callable[..., TtsClient]) -> None:
    broker = broker_factory("--http", "127.0.0.1:0", "--default-model", "tone")
    assert broker.http is not None
    before = samples(broker.http)
    assert value(before, "tts_jobs_total", model="tone", state="done") == 0
    assert total(before, "tts_workers") == 0

    client = make_client(broker.frontend)
    handles = [client.submit(f"line {i}") for i in range(6)]  # no worker yet: they wait in the queue
    wait_for(lambda: value(samples(broker.http), "tts_queue_depth", model="tone", priority="normal") == 6, 10,
             what="queue depth 6 in /metrics")
    queued = samples(broker.http)
    assert value(queued, "tts_jobs_total", model="tone", state="queued") == 6
    wait_for(lambda: value(samples(broker.http), "tts_queue_oldest_age_seconds", model="tone") > 0.2, 10,
             what="the oldest job's age growing")

    tone_workers(broker, n=2, latency_s=0.05)
    for handle in handles:
        handle.result()
    client.synthesize("line 0")  # the same text again: answered from the result cache
    wait_for(lambda: value(samples(broker.http), "tts_jobs_total", model="tone", state="done") == 7, 10,
             what="7 done jobs in /metrics")
    # Counters move at once; levels (gauges) come from the snapshot the broker publishes every half second.
    wait_for(lambda: total(samples(broker.http), "tts_worker_jobs_total", result="done") == 6, 10,
             what="the next snapshot")
    after = samples(broker.http)
    assert value(after, "tts_jobs_total", model="tone", state="queued") == 7
    assert value(after, "tts_queue_depth", model="tone", priority="normal") == 0
    assert value(after, "tts_workers", model="tone:tone-v1", state="idle") == 2
    assert value(after, "tts_workers", model="tone:tone-v1", state="busy") == 0
    assert total(after, "tts_worker_generation_seconds_count") == 6
    assert value(after, "tts_cache_hits_total") == 1
    assert value(after, "tts_cache_misses_total") >= 6
    assert value(after, "tts_journal_commits_total") > 0
    assert value(after, "tts_journal_bytes") > 0
    wait_for(lambda: total(samples(broker.http), "tts_worker_rss_bytes") > 0, 10, what="worker RSS from heartbeats")
    rtf = [v for (n, _), v in after.items() if n == "tts_worker_real_time_factor"]
    assert len(rtf) == 2 and all(v >= 0 for v in rtf)


def test_retries_and_dead_letters_are_counted(broker_factory: Callable[..., BrokerProc], ctx: Any) -> None:
    broker = broker_factory("--http", "127.0.0.1:0", "--max-attempts", "2", "--no-cache")
    assert broker.http is not None
    worker = RawWorker(ctx, broker.backend)
    client = RawClient(ctx, broker.frontend)
    client.submit("job-retry")
    job = worker.next_job()
    worker.fail(job, code="engine_error", retryable=True)  # attempt 2 follows
    job = worker.next_job()
    worker.fail(job, code="bad_speaker", retryable=False)
    client.recv_until(Command.ERROR)
    wait_for(lambda: value(samples(broker.http), "tts_dead_letters_total", model="any", code="bad_speaker") == 1,
             10, what="a dead letter in /metrics")
    found = samples(broker.http)
    assert value(found, "tts_job_retries_total", model="any") == 1
    assert value(found, "tts_jobs_total", model="any", state="failed") == 1

    def failures() -> list[dict[str, Any]]:
        status, _, body = get(broker.http + "api/dashboard")
        assert status == 200
        return json.loads(body)["failures"]

    shown = wait_for(failures, 10, what="the failure on the dashboard's feed")
    assert isinstance(shown, list) and shown[0]["job_id"] == "job-retry"
    assert shown[0]["error"]["code"] == "bad_speaker" and shown[0]["attempt"] == 2


def tts_status_json(url: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TTS_")}
    run = subprocess.run([sys.executable, "-m", "tts_client", "--broker", url, "status", "--json"],
                         capture_output=True, text=True, timeout=60, cwd=str(ROOT), env=env)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def _without_clock(doc: dict[str, Any]) -> dict[str, Any]:
    """The document minus the two figures that move with the clock alone (uptime, time since a heartbeat)."""
    doc = json.loads(json.dumps(doc))
    doc.pop("uptime_s")
    for worker in doc["workers"]:
        worker.pop("last_seen_ms")
    return doc


def test_api_status_equals_tts_status_json(broker_factory: Callable[..., BrokerProc], ctx: Any) -> None:
    # Scripted workers with fixed stats and slow heartbeats, so nothing but the clock changes between the two
    # reads; the broker's snapshot (taken every 0.5 s) then shows exactly the state the CLI sees.
    broker = broker_factory("--http", "127.0.0.1:0", "--heartbeat-interval-s", "30", "--default-model", "tone")
    assert broker.http is not None
    workers = [RawWorker(ctx, broker.backend, name="raw-tone"),
               RawWorker(ctx, broker.backend, engine="other", model="m", name="raw-other")]
    for w in workers:
        w.heartbeat(rss_bytes=123456789, mean_gen_ms=12.5, jobs_done=1, warm=["alice"])
    client = RawClient(ctx, broker.frontend)
    client.submit("job-a", "first")  # the default model, tone: only the first worker serves it
    workers[0].result(workers[0].next_job())
    client.recv_until(Command.RESULT)
    client.submit("job-b", "waits", model="nobody:serves-this")
    wait_for(lambda: len(client.status().workers) == 2 and client.status().jobs["done"] == 1, 10)

    def api_matches() -> bool:
        status, _, body = get(broker.http + "api/status")
        return status == 200 and _without_clock(json.loads(body)) == _without_clock(tts_status_json(broker.frontend))

    wait_for(api_matches, 10, interval_s=0.3, what="/api/status equal to `tts status --json`")
    doc = tts_status_json(broker.frontend)
    assert doc["queue_depth"] == 1 and doc["default_model"] == "tone"
    assert {w["id"] for w in doc["workers"]} == {w.worker_id for w in workers}


def test_http_side_answers_bad_requests_and_never_stops_the_broker(broker_factory: Callable[..., BrokerProc],
                                                                   ctx: Any) -> None:
    broker = broker_factory("--http", "127.0.0.1:0")
    assert broker.http is not None
    assert get(broker.http + "static/../../etc/passwd")[0] == 404
    assert get(broker.http + "static/nothing.js")[0] == 404
    assert get(broker.http + "nothing")[0] == 404
    status, content_type, page = get(broker.http)
    assert status == 200 and "text/html" in content_type and "/static/app.js" in page
    assert "http://" not in page.replace(broker.http, "") and "https://" not in page  # nothing from a CDN
    for name, kind in (("app.js", "javascript"), ("app.css", "css")):
        status, content_type, _ = get(broker.http + "static/" + name)
        assert status == 200 and kind in content_type
    parts = urlsplit(broker.http)
    for garbage in (b"\x00\xff" * 512 + b"\r\n\r\n", b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n",
                    b"POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"):
        with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
            sock.sendall(garbage)
            sock.shutdown(socket.SHUT_WR)
            reply = sock.recv(200)
            # aiohttp answers 4xx or just closes the connection; either way nothing is served
            assert not reply or (reply.startswith(b"HTTP/1.") and b" 200 " not in reply.split(b"\r\n")[0]), reply
        assert get(broker.http + "metrics")[0] == 200
    client = RawClient(ctx, broker.frontend)
    client.ping()
    assert get(broker.http + "healthz")[0] == 200
    assert broker.proc is not None and broker.proc.alive()


def test_a_token_file_guards_the_data_endpoints(broker_factory: Callable[..., BrokerProc], tmp_path: Any) -> None:
    tokens = tmp_path / "http-tokens"
    tokens.write_text("# scrapers\nsecret-one\n\nsecret-two\n")
    broker = broker_factory("--http", "127.0.0.1:0", "--http-token-file", str(tokens))
    assert broker.http is not None
    for path in ("metrics", "api/status", "api/dashboard"):
        assert get(broker.http + path)[0] == 401
        assert get(broker.http + path + "?token=wrong")[0] == 401
        assert get(broker.http + path + "?token=secret-two")[0] == 200
        request = urllib.request.Request(broker.http + path, headers={"Authorization": "Bearer secret-one"})
        with urllib.request.urlopen(request, timeout=10) as reply:
            assert reply.status == 200
    # the page shell, its assets and the liveness probe carry no data and stay open
    for path in ("", "static/app.js", "healthz"):
        assert get(broker.http + path)[0] == 200


def test_http_port_in_use_is_a_clear_start_error(broker_factory: Callable[..., BrokerProc]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        broker = broker_factory("--http", f"127.0.0.1:{port}", start=False)
        with pytest.raises(AssertionError, match="cannot listen"):
            broker.start()
    bad = broker_factory("--http", "nowhere", start=False)
    with pytest.raises(AssertionError, match="HOST:PORT"):
        bad.start()


def test_workers_that_leave_drop_out_of_the_metrics(broker_factory: Callable[..., BrokerProc],
                                                     start_worker: Callable[..., Proc],
                                                     make_client: Callable[..., TtsClient]) -> None:
    broker = broker_factory("--http", "127.0.0.1:0")
    assert broker.http is not None
    worker = start_worker(broker, opts={"latency_s": 0.01})
    client = make_client(broker.frontend)
    wait_for(lambda: len(client.broker_status().workers) == 1, 30)
    client.synthesize("hello")
    wait_for(lambda: total(samples(broker.http), "tts_worker_generation_seconds_count") == 1, 10)
    worker.stop()
    wait_for(lambda: total(samples(broker.http), "tts_worker_state") == 0, 20, what="the worker's series gone")
    found = samples(broker.http)
    assert total(found, "tts_worker_generation_seconds_count") == 0
    assert value(found, "tts_jobs_total", model="any", state="done") == 1
