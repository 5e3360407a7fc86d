"""`tts batch`: job ids derived from the line, Ctrl-C cancels the run's unfinished jobs, a rerun skips the
lines already written (--overwrite redoes them), and --speaker/--voice/--priority apply to every line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from tts_client import TtsClient
from tts_client.batchfile import BatchLine
from tts_client.batchrun import BatchDefaults, batch_job_id

from harness import ROOT, BrokerProc, wait_for

pytestmark = pytest.mark.timeout(120)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TTS_")}
    env["NO_COLOR"] = "1"
    return env


def _batch(url: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "tts_client", "--broker", url, "batch", *args]


def _write_lines(path: Path, n: int) -> None:
    path.write_text("".join(json.dumps({"text": f"Batch line {i}.", "id": f"l{i}"}) + "\n" for i in range(n)))


@pytest.mark.unit
def test_a_lines_job_id_is_derived_from_file_id_and_content(tmp_path: Path) -> None:
    line = BatchLine(3, "Hello there.", None, "intro", "0", {})
    plain = BatchDefaults()
    first = batch_job_id(str(tmp_path / "book.jsonl"), line, plain)
    assert first == batch_job_id(str(tmp_path / "book.jsonl"), line, plain)  # stable across runs
    assert first.startswith("b-book-0-intro-") and len(first) <= 128
    others = {
        batch_job_id(str(tmp_path / "other.jsonl"), line, plain),
        batch_job_id(str(tmp_path / "book.jsonl"), BatchLine(3, "Hello there!", None, "intro", "0", {}), plain),
        batch_job_id(str(tmp_path / "book.jsonl"), BatchLine(3, "Hello there.", None, "outro", "0", {}), plain),
        batch_job_id(str(tmp_path / "book.jsonl"), line, BatchDefaults(speaker="alba")),
        batch_job_id(str(tmp_path / "book.jsonl"), line, BatchDefaults(voice={"length_scale": 1.3})),
    }
    assert first not in others and len(others) == 5
    long_id = batch_job_id("x" * 300, BatchLine(1, "t", None, "y" * 300, "z" * 300, {}), plain)
    assert len(long_id) <= 128


def test_ctrl_c_cancels_the_batch_and_a_rerun_does_only_the_rest(broker: BrokerProc, tone_workers,
                                                                  make_client: Callable[..., TtsClient],
                                                                  tmp_path: Path) -> None:
    tone_workers(broker, latency_s=0.4)
    lines, out = tmp_path / "book.jsonl", tmp_path / "out"
    _write_lines(lines, 16)
    run = subprocess.Popen(_batch(broker.frontend, str(lines), "--output-dir", str(out), "--max-in-flight", "6",
                                  "--priority", "low"),
                           cwd=str(ROOT), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client = make_client(broker.frontend)
    try:
        wait_for(lambda: len(list(out.glob("*.wav"))) >= 2, 40, what="two lines written")
        run.send_signal(signal.SIGINT)
        _stdout, stderr = run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 130, stderr
    assert "interrupted: cancelled" in stderr and "Traceback" not in stderr
    views = [v for v in client.jobs(limit=100) if v.job_id.startswith("b-book-")]
    assert views and all(v.priority.value == "low" for v in views)
    # nothing of the interrupted run is left queued or running at the broker
    wait_for(lambda: not [v for v in client.jobs(limit=100)
                          if v.job_id.startswith("b-book-") and v.state.value in ("queued", "running")],
             10, what="no batch job left queued or running")
    assert any(v.state.value == "cancelled" for v in client.jobs(limit=100) if v.job_id.startswith("b-book-"))
    written_before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.wav")}
    # every job id names its line
    assert {v.job_id.split("-")[3] for v in views} <= {f"l{i}" for i in range(16)}

    rerun = subprocess.run(_batch(broker.frontend, str(lines), "--output-dir", str(out)), cwd=str(ROOT),
                           env=_env(), capture_output=True, text=True, timeout=90)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(written_before)} already written" in rerun.stderr
    assert f"{16 - len(written_before)} written" in rerun.stderr
    assert len(list(out.glob("*.wav"))) == 16
    assert all(out.joinpath(n).stat().st_mtime_ns == t for n, t in written_before.items())  # not redone

    again = subprocess.run(_batch(broker.frontend, str(lines), "--output-dir", str(out), "--overwrite"),
                           cwd=str(ROOT), env=_env(), capture_output=True, text=True, timeout=90)
    assert again.returncode == 0 and "16 written" in again.stderr, again.stderr
    assert all(out.joinpath(n).stat().st_mtime_ns != t for n, t in written_before.items())
