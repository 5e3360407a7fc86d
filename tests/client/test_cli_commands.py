"""The `tts` command line against a real broker and tone workers: output, files and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile

from harness import ROOT, BrokerProc, tone_frames

pytestmark = pytest.mark.timeout(120)


def tts(*args: str, url: str | None = None, timeout_s: float = 60, cwd: Path | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TTS_")}
    full_env.update({"NO_COLOR": "1", **(env or {})})
    prefix = ["--broker", url] if url else []
    return subprocess.run([sys.executable, "-m", "tts_client", *prefix, *args], capture_output=True, text=True,
                          timeout=timeout_s, cwd=str(cwd or ROOT), env=full_env)


def test_say_writes_the_file_and_prints_its_path(broker: BrokerProc, tone_workers, tmp_path: Path) -> None:
    tone_workers(broker)
    out = tmp_path / "out"
    run = tts("say", "Hello there. General Kenobi!", "--speaker", "obi", "--output-dir", str(out), "--id", "l1",
              "--stream-index", "4", url=broker.frontend)
    assert run.returncode == 0, run.stderr
    path = Path(run.stdout.strip())
    assert path == (out / "4_l1.wav").resolve()
    assert soundfile.info(str(path)).frames == tone_frames("Hello there. General Kenobi!")
    assert "ms" in run.stderr and "tone" in run.stderr


def test_say_to_a_file_streaming_in_flac_via_env_url(broker: BrokerProc, tone_workers, tmp_path: Path) -> None:
    tone_workers(broker)
    target = tmp_path / "nested" / "line.flac"
    run = tts("say", "Streamed. In two chunks.", "--stream", "-o", str(target),
              env={"TTS_BROKER_URL": broker.frontend})
    assert run.returncode == 0, run.stderr
    assert soundfile.info(str(target)).format == "FLAC" and "first audio" in run.stderr


def test_exit_codes_for_unavailable_broker_usage_and_job_failure(broker: BrokerProc, tone_workers,
                                                                 tmp_path: Path, dead_endpoint: str) -> None:
    nobody = dead_endpoint
    run = tts("say", "hello", "--output-dir", str(tmp_path / "o"), url=nobody,
              env={"TTS_CLIENT_REQUEST_TIMEOUT_S": "0.5"})
    assert run.returncode == 3 and "not answering" in run.stderr
    assert tts("status", url=nobody, env={"TTS_CLIENT_REQUEST_TIMEOUT_S": "0.5"}).returncode == 3
    assert tts("ping", url=nobody, env={"TTS_CLIENT_REQUEST_TIMEOUT_S": "0.5"}).returncode == 3
    assert tts("say", url=broker.frontend).returncode == 2  # missing TEXT
    assert tts("say", "x", "--format", "aiff", url=broker.frontend).returncode == 2
    assert tts("no-such-command").returncode == 2
    tone_workers(broker, fail_on="BOOM")
    run = tts("say", "BOOM goes the engine", "--output-dir", str(tmp_path / "o"), url=broker.frontend)
    assert run.returncode == 1 and "engine_error" in run.stderr
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


def test_batch_writes_every_line_and_reports_bad_ones(broker: BrokerProc, tone_workers, tmp_path: Path) -> None:
    tone_workers(broker, n=2)
    lines = [json.dumps({"text": f"Batch line {i}.", "speaker": "narrator", "id": i}) for i in range(30)]
    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(lines) + "\n\n")
    out = tmp_path / "out"
    run = tts("batch", str(good), "--output-dir", str(out), "--format", "ogg", url=broker.frontend)
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(f"0_{i}.ogg" for i in range(30))
    assert "30 written, 0 failed, 0 bad lines" in run.stderr

    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([lines[0], "{not json", json.dumps({"speaker": "x", "id": 9}), lines[1], lines[0],
                              json.dumps(["a list"])]) + "\n")
    out2 = tmp_path / "out2"
    run = tts("batch", str(bad), "--output-dir", str(out2), url=broker.frontend)
    assert run.returncode == 1
    for line_no in (2, 3, 5, 6):
        assert f"bad.jsonl:{line_no}: skipped" in run.stderr
    assert "2 written, 0 failed, 4 bad lines" in run.stderr
    assert sorted(p.name for p in out2.iterdir()) == ["0_0.wav", "0_1.wav"]


def test_batch_with_a_failing_job_exits_1(broker: BrokerProc, tone_workers, tmp_path: Path) -> None:
    tone_workers(broker, fail_on="FAIL")
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps({"text": t, "id": i}) for i, t in enumerate(["ok", "FAIL me", "ok too"])))
    run = tts("batch", str(src), "--output-dir", str(tmp_path / "o"), url=broker.frontend)
    assert run.returncode == 1
    assert "in.jsonl:2 (id 1): failed: engine_error" in run.stderr
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["0_0.wav", "0_2.wav"]


def test_status_json_lists_workers_and_queue(broker: BrokerProc, tone_workers) -> None:
    tone_workers(broker, n=2)
    run = tts("status", "--json", url=broker.frontend)
    assert run.returncode == 0, run.stderr
    view = json.loads(run.stdout)
    assert len(view["workers"]) == 2 and "depth" in view["queue"] and view["queue_depth"] == 0
    for worker in view["workers"]:
        assert worker["worker_id"].startswith("w-") and worker["id"] == worker["worker_id"]
        assert worker["engine"] == "tone"
        assert worker["state"] in ("idle", "busy") and worker["jobs_done"] >= 0 and worker["rss_bytes"] >= 0
    table = tts("status", url=broker.frontend)
    assert table.returncode == 0 and "WORKER" in table.stdout and "tone:" in table.stdout
    assert "queue 0/" in table.stdout


def test_ping_and_reload(broker: BrokerProc, tone_workers) -> None:
    tone_workers(broker, n=2)
    run = tts("ping", url=broker.frontend)
    assert run.returncode == 0 and run.stdout.startswith("broker b-")
    run = tts("reload", "--model", "tone", "--engine-opt", "latency_s=0", url=broker.frontend)
    assert run.returncode == 0 and "2 of 2 worker(s) reloaded" in run.stdout, run.stdout + run.stderr
    assert tts("reload", "--engine-opt", "novalue", url=broker.frontend).returncode == 2
