"""Text that yields no audio ("...", "-") is a failed job with code `no_audio`, never a 44-byte file; and a
`--format` that contradicts `-o`'s extension is refused (exit 2) instead of writing one format under another's
name."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from tts_client import TtsClient
from tts_client.audio import output_format, write_pcm
from tts_client.errors import InvalidRequest, JobFailed

from harness import ROOT, BrokerProc

pytestmark = pytest.mark.timeout(120)


def tts(*args: str, url: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TTS_")}
    env["NO_COLOR"] = "1"
    return subprocess.run([sys.executable, "-m", "tts_client", "--broker", url, *args], capture_output=True,
                          text=True, timeout=60, cwd=str(ROOT), env=env)


def test_unspeakable_text_fails_with_no_audio(broker: BrokerProc, tone_workers,
                                              make_client: Callable[..., TtsClient], tmp_path: Path) -> None:
    tone_workers(broker)
    client = make_client(broker.frontend)
    for text in ("...", "-", "?! ..."):
        with pytest.raises(JobFailed) as caught:
            client.synthesize(text)
        assert caught.value.code == "no_audio" and not caught.value.retryable
    assert {v.error.code for v in client.jobs("failed") if v.error} == {"no_audio"}
    out = tmp_path / "out"
    out.mkdir()
    run = tts("say", "...", "-o", str(out / "dots.wav"), url=broker.frontend)
    assert run.returncode == 1 and "no_audio" in run.stderr and "Traceback" not in run.stderr
    assert not list(out.iterdir())  # no 44-byte file
    assert client.synthesize("Words. ...").num_frames > 0  # speakable text around it still speaks


@pytest.mark.skipif(importlib.util.find_spec("piper") is None, reason="piper-tts is not installed")
def test_stdio_piper_says_no_audio_for_dots(tmp_path: Path) -> None:
    lines = ['{"type":"generate","id":1,"text":"...","output_path":"dots.wav"}']
    proc = subprocess.run([sys.executable, "-m", "tts_worker", "--stdio", "--engine", "piper"],
                          input="\n".join(lines) + "\n", capture_output=True, text=True, cwd=tmp_path, timeout=100)
    answer = json.loads(proc.stdout.splitlines()[-1])
    assert answer["success"] is False and answer["code"] == "no_audio", answer
    assert not (tmp_path / "dots.wav").exists()


@pytest.mark.unit
def test_format_and_extension_must_agree(tmp_path: Path) -> None:
    assert output_format(tmp_path / "a.mp3", None) == "mp3"
    assert output_format(tmp_path / "a.MP3", "mp3") == "mp3"
    assert output_format(tmp_path / "a", "flac") == "flac"
    assert output_format(tmp_path / "a", None, "ogg") == "ogg"
    with pytest.raises(InvalidRequest, match="format wav conflicts with the file name a.mp3"):
        output_format(tmp_path / "a.mp3", "wav")
    with pytest.raises(InvalidRequest, match="not an audio format"):
        output_format(tmp_path / "a.txt", "wav")
    with pytest.raises(InvalidRequest, match="conflicts"):
        write_pcm(tmp_path / "b.mp3", b"\0\0" * 100, 16000, fmt="wav")
    assert not list(tmp_path.iterdir())


def test_cli_refuses_a_format_that_contradicts_the_file_name(dead_endpoint: str, tmp_path: Path) -> None:
    run = tts("say", "hello", "--format", "wav", "-o", str(tmp_path / "x.mp3"), url=dead_endpoint)
    assert run.returncode == 2, run.stderr  # before the (absent) broker is asked
    assert "conflicts with the file name x.mp3" in run.stderr and "Traceback" not in run.stderr
