"""`tts health`, `tts get`, `tts status --watch`, `tts up`'s dashboard address and `--log-json`, against a real
broker and tone workers."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest
import soundfile

from tts_protocol import Command

from tts_client import TtsClient
from tts_client.errors import NotFound, RemoteError

from harness import ROOT, BrokerProc, Proc, registered_workers, wait_for
from peers import RawClient, RawWorker

pytestmark = pytest.mark.timeout(120)


def tts(*args: str, url: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TTS_")}
    env["NO_COLOR"] = "1"
    return subprocess.run([sys.executable, "-m", "tts_client", "--broker", url, *args], capture_output=True,
                          text=True, timeout=timeout_s, cwd=str(ROOT), env=env)


def test_health_exit_codes(broker_factory: Callable[..., BrokerProc], tone_workers, dead_endpoint: str) -> None:
    broker = broker_factory("--default-model", "tone")
    none = tts("health", url=broker.frontend)
    assert none.returncode == 4, none.stdout + none.stderr
    assert "no connected worker serves tone" in none.stdout
    tone_workers(broker)
    ok = tts("health", "--json", url=broker.frontend)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    verdict = json.loads(ok.stdout)
    assert verdict["healthy"] is True and verdict["model"] == "tone" and verdict["workers"] == 1
    other = tts("health", "--model", "piper", url=broker.frontend)
    assert other.returncode == 4
    assert tts("health", "--model", "tone:tone-v1", url=broker.frontend).returncode == 0
    gone = tts("health", url=dead_endpoint, timeout_s=60)
    assert gone.returncode == 3, gone.stderr


def test_get_fetches_a_finished_jobs_audio_after_retry(broker_factory: Callable[..., BrokerProc], ctx: Any,
                                                        tmp_path: Path, make_client: Callable[..., TtsClient]
                                                        ) -> None:
    broker = broker_factory("--no-cache")
    worker = RawWorker(ctx, broker.backend)
    raw = RawClient(ctx, broker.frontend)
    raw.submit("job-get", "speak me")
    job = worker.next_job()
    worker.fail(job, code="engine_error", message="first try fails")
    raw.recv_until(Command.ERROR)
    client = make_client(broker.frontend)
    with pytest.raises(RemoteError, match="failed, not done"):
        client.get_result("job-get")
    assert tts("retry", "job-get", url=broker.frontend).returncode == 0
    job = worker.next_job()
    with pytest.raises(RemoteError, match="running, not done"):
        client.get_result("job-get")
    pcm = bytes(range(256)) * 8
    worker.result(job, pcm=pcm, sample_rate=22050)
    wait_for(lambda: client.job_status("job-get").state.value == "done", 10)
    got = client.get_result("job-get")
    # attempts keep counting across RETRY (leases are unique for ever): the retried run is attempt 2
    assert got.pcm == pcm and got.sample_rate == 22050 and got.meta.attempt == 2 and got.job_id == "job-get"
    out = tmp_path / "got.wav"
    run = tts("get", "job-get", "-o", str(out), url=broker.frontend)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(out)
    data, rate = soundfile.read(out, dtype="int16")
    assert rate == 22050 and data.tobytes() == pcm
    with pytest.raises(NotFound):
        client.get_result("job-nobody-made")
    missing = tts("get", "job-nobody-made", "-o", str(tmp_path / "x.wav"), url=broker.frontend)
    assert missing.returncode == 1 and "no job job-nobody-made" in missing.stderr
    assert not (tmp_path / "x.wav").exists()


def test_status_watch_prints_until_a_signal(broker: BrokerProc, tone_workers,
                                            make_client: Callable[..., TtsClient]) -> None:
    tone_workers(broker)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TTS_")}
    watch = subprocess.Popen([sys.executable, "-m", "tts_client", "--broker", broker.frontend, "status", "--watch",
                              "--json", "--interval-s", "0.2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, cwd=str(ROOT), env=env)
    try:
        assert watch.stdout is not None
        first = json.loads(watch.stdout.readline())
        assert first["jobs"]["done"] == 0 and len(first["workers"]) == 1
        make_client(broker.frontend).synthesize("watch me")
        for line in watch.stdout:  # each refresh is one JSON document; the done count shows up in one
            if json.loads(line)["jobs"]["done"] == 1:
                break
        watch.send_signal(signal.SIGINT)
        assert watch.wait(20) == 0
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
    table = subprocess.Popen([sys.executable, "-m", "tts_client", "--broker", broker.frontend, "status", "--watch",
                              "--interval-s", "0.2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd=str(ROOT), env={**env, "NO_COLOR": "1"})
    try:
        assert table.stdout is not None
        lines = [table.stdout.readline()]
        while "Ctrl-C to stop" not in lines[-1] and len(lines) < 10:
            lines.append(table.stdout.readline())
        assert lines[0].startswith("WORKER") and "Ctrl-C to stop" in lines[-1], lines
        assert any(line.startswith("queue 0/") for line in lines), lines
        table.send_signal(signal.SIGTERM)
        assert table.wait(20) == 0
    finally:
        if table.poll() is None:
            table.kill()
            table.wait()


def test_log_json_lines_carry_job_and_worker_ids(broker_factory: Callable[..., BrokerProc],
                                                 start_worker: Callable[..., Proc],
                                                 make_client: Callable[..., TtsClient]) -> None:
    broker = broker_factory("--log-json")
    worker = start_worker(broker, extra_args=["--log-json"])
    client = make_client(broker.frontend)
    wait_for(lambda: registered_workers(client) == 1, 30)
    result = client.synthesize("logged")
    job_id, worker_id = result.job_id, result.meta.worker_id
    wait_for(lambda: f"{job_id} attempt 1: done" in worker.log(), 10, what="the worker's done line")
    worker.stop()
    broker.stop()
    for text, component in ((broker.log(), "broker"), (worker.log(), "worker")):
        docs = [json.loads(line) for line in text.splitlines() if line.strip()]
        assert docs and all(d["component"] == component and {"ts", "level", "logger", "msg"} <= d.keys()
                            for d in docs)
        about_job = [d for d in docs if job_id in d["msg"]]
        assert about_job and all(d["job_id"] == job_id for d in about_job), about_job
        about_worker = [d for d in docs if worker_id in d["msg"]]
        assert about_worker and all(d["worker_id"] == worker_id for d in about_worker), about_worker


def test_up_serves_the_dashboard_and_prints_its_address(procs: list[Proc], tmp_path: Path,
                                                        make_client: Callable[..., TtsClient]) -> None:
    frontend, backend = f"ipc://{tmp_path / 'front.ipc'}", f"ipc://{tmp_path / 'back.ipc'}"
    up = Proc([sys.executable, "-m", "tts_client", "up", "--workers", "1", "--engine", "tone", "--frontend",
               frontend, "--backend", backend, "--drain-grace-s", "2", "--broker-opt",
               f"state-dir={tmp_path / 'state'}"], tmp_path / "up.log")
    procs.append(up)
    found = wait_for(lambda: re.search(r"dashboard (http://127\.0\.0\.1:\d+/)", up.log()) or not up.alive(), 60,
                     what="the dashboard address")
    assert up.alive(), up.log()
    url = found.group(1)  # type: ignore[union-attr]
    client = make_client(frontend)
    wait_for(lambda: registered_workers(client) == 1, 60)
    with urllib.request.urlopen(url, timeout=10) as page:
        assert b"tts-broker" in page.read()
    client.synthesize("counted")
    wait_for(lambda: json.loads(urllib.request.urlopen(url + "api/status", timeout=10).read())["jobs"]["done"] == 1,
             10, what="the job in /api/status")
    up.signal(signal.SIGTERM)
    assert up.popen.wait(60) == 0, up.log()
