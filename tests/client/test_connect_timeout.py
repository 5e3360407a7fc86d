"""The connect timeout: a broker that never answered, or stopped answering, ends the waiting calls with
BrokerUnavailable (exit 3 in the CLI) within connect_timeout_s, not after the 300 s job timeout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from tts_client import TtsClient, seed_api
from tts_client.errors import BrokerUnavailable

from harness import ROOT, BrokerProc, wait_for

pytestmark = pytest.mark.timeout(90)


def test_synthesize_against_nobody_fails_at_the_connect_timeout(make_client: Callable[..., TtsClient],
                                                                dead_endpoint: str) -> None:
    client = make_client(dead_endpoint, timeout_s=300, connect_timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="has never answered.*connect timeout 1s"):
        client.synthesize("Nobody listens.")
    assert 0.9 <= time.monotonic() - started < 5


def test_generate_audio_against_nobody_fails_at_the_connect_timeout(dead_endpoint: str, tmp_path: Path) -> None:
    seed_api.configure(url=dead_endpoint, timeout_s=300, connect_timeout_s=1.0)
    try:
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable, match="never answered"):
            seed_api.generate_audio("Nobody listens.", None, 1, 0, str(tmp_path))
        assert time.monotonic() - started < 5
    finally:
        seed_api.shutdown_worker_manager()


def test_a_broker_that_stops_answering_mid_job_is_unavailable(broker: BrokerProc, tone_workers,
                                                              make_client: Callable[..., TtsClient]) -> None:
    tone_workers(broker, latency_s=30)
    client = make_client(broker.frontend, timeout_s=300, connect_timeout_s=1.5)
    handle = client.submit("A job on a frozen broker.", job_id="frozen-1")
    wait_for(lambda: client.job_status("frozen-1").state.value == "running", 20, what="job running")
    assert broker.proc is not None
    broker.proc.signal(signal.SIGSTOP)  # alive and connected, answering nothing
    try:
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable, match="has not answered"):
            handle.result()
        assert time.monotonic() - started < 6
    finally:
        broker.proc.signal(signal.SIGCONT)


def test_tts_batch_exits_3_when_the_broker_dies_mid_run(broker: BrokerProc, tone_workers, tmp_path: Path) -> None:
    tone_workers(broker, latency_s=0.3)
    lines = tmp_path / "lines.jsonl"
    lines.write_text("".join(json.dumps({"text": f"Line number {i}.", "id": i}) + "\n" for i in range(40)))
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TTS_")}
    env.update({"NO_COLOR": "1", "TTS_CLIENT_CONNECT_TIMEOUT_S": "2"})
    run = subprocess.Popen([sys.executable, "-m", "tts_client", "--broker", broker.frontend, "batch", str(lines),
                            "--output-dir", str(out), "--max-in-flight", "4"], cwd=str(ROOT), env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: len(list(out.glob("*.wav"))) >= 2, 30, what="two lines written")
        broker.kill()
        started = time.monotonic()
        _stdout, stderr = run.communicate(timeout=30)
        assert time.monotonic() - started < 10
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 3, stderr
    assert "Traceback" not in stderr and "stopped answering" in stderr
