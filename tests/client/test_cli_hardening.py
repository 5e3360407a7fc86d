"""CLI and seed-API problems found as an attacker would: each is one clear line, found before synthesis."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import zmq

from tts_protocol import Command

from tts_client import seed_api
from tts_client.errors import InvalidRequest

from harness import ROOT, BrokerProc
from peers import RawClient

pytestmark = pytest.mark.timeout(120)


def tts(*args: str, url: str | None = None, timeout_s: float = 60,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TTS_")}
    full_env.update({"NO_COLOR": "1", **(env or {})})
    prefix = ["--broker", url] if url else []
    return subprocess.run([sys.executable, "-m", "tts_client", *prefix, *args], capture_output=True, text=True,
                          timeout=timeout_s, cwd=str(ROOT), env=full_env)


def one_line(run: subprocess.CompletedProcess) -> str:
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    return lines[0]


@pytest.mark.parametrize("url", ["127.0.0.1:5555", "localhost", "tcp://", "tcp://127.0.0.1"])
def test_a_url_that_is_not_an_endpoint_is_a_one_line_usage_error(url: str) -> None:
    run = tts("ping", url=url)
    assert run.returncode == 2
    assert "tcp://HOST:PORT" in one_line(run)


def test_an_unwritable_output_folder_is_refused_before_the_broker_is_asked(tmp_path: Path,
                                                                            dead_endpoint: str) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    # The broker is not even there: exit 2 (not 3) shows the check ran before any request.
    run = tts("say", "hello", "--output-dir", str(blocker / "out"), url=dead_endpoint)
    assert run.returncode == 2
    assert "cannot write to the output folder" in one_line(run)
    batch = tmp_path / "lines.jsonl"
    batch.write_text('{"text": "one", "id": "1"}\n')
    run = tts("batch", str(batch), "--output-dir", str(blocker / "out"), url=dead_endpoint)
    assert run.returncode == 2 and "cannot write to the output folder" in one_line(run)


def test_whitespace_only_text_is_refused_before_submit(dead_endpoint: str, broker: BrokerProc,
                                                       ctx: zmq.Context) -> None:
    run = tts("say", "  \n\t ", url=dead_endpoint)
    assert run.returncode == 2 and "only whitespace" in one_line(run)
    client = RawClient(ctx, broker.frontend)  # and the broker refuses it too, for any other client
    client.submit("blank", text=" \u3000\n")
    error = client.recv_until(Command.ERROR)
    assert error.body.code == "bad_request" and "whitespace" in error.body.message
    assert client.status().jobs["live"] == 0
    client.close()


def test_a_model_no_worker_serves_fails_fast_naming_the_connected_models(broker: BrokerProc, tone_workers,
                                                                         tmp_path: Path) -> None:
    tone_workers(broker)
    run = tts("say", "hello", "--model", "piper:en_US-lessac-medium", "--output-dir", str(tmp_path / "o"),
              url=broker.frontend, env={"TTS_CLIENT_TIMEOUT_S": "600"}, timeout_s=30)
    assert run.returncode == 1
    line = one_line(run)
    assert "no_workers" in line and "piper:en_US-lessac-medium" in line and "tone" in line
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
    ok = tts("say", "hello", "--model", "tone", "--output-dir", str(tmp_path / "o"), url=broker.frontend)
    assert ok.returncode == 0, ok.stderr


def test_process_message_chunks_refuses_colliding_file_names_before_synthesis(tmp_path: Path,
                                                                              dead_endpoint: str) -> None:
    seed_api.configure(url=dead_endpoint, timeout_s=1, request_timeout_s=0.5)
    try:
        # Unsafe ids get a digest of their own (PROTOCOL.md section 7), so only the same id twice collides now.
        messages = [{"text": "first", "id": "a/b"}, {"text": "second", "id": "x"}, {"text": "third", "id": "a/b"}]
        with pytest.raises(InvalidRequest, match="'a/b'.*'a/b'.*0_a_b-[0-9a-f]{8}.wav"):
            seed_api.process_message_chunks(seed_api.create_message_chunks(messages, 2), str(tmp_path / "out"))
        with pytest.raises(InvalidRequest, match="whitespace"):
            seed_api.process_message_chunks([[{"text": " ", "id": "1"}]], str(tmp_path / "out"))
        assert not (tmp_path / "out").exists()  # nothing written, nothing synthesised
    finally:
        seed_api.shutdown_worker_manager()


def test_reload_reports_each_worker_and_fails_when_none_reloaded(broker: BrokerProc, tone_workers) -> None:
    tone_workers(broker, n=2)
    ok = tts("reload", "--model", "tone", "--engine-opt", "capacity=2", "--wait-s", "60", url=broker.frontend,
             timeout_s=90)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.count(": reloaded, back as w-") == 2 and "2 of 2 worker(s) reloaded" in ok.stdout
    bad = tts("reload", "--model", "tone", "--engine-opt", "capacity=lots", "--wait-s", "60", url=broker.frontend,
              timeout_s=90)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert bad.stdout.count(": failed, kept its old engine: ") == 2 and "capacity=" in bad.stdout
    assert "0 of 2 worker(s) reloaded" in bad.stdout
    nobody = tts("reload", "--model", "piper", url=broker.frontend)
    assert nobody.returncode == 1 and "no connected worker serves 'piper'" in one_line(nobody)
