"""`tts-worker --stdio`: the seed's manual test (two JSON lines in, a WAV and one JSON answer per line out)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import wave
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

SEED_LINES = [
    '{"type":"load_model","model_version":"1.5"}',
    '{"type":"generate","id":1,"text":"Test","output_path":"test.wav","voice_settings":{}}',
]


def run_stdio(tmp_path: Path, lines: list[str], engine: str) -> list[dict]:
    proc = subprocess.run([sys.executable, "-m", "tts_worker", "--stdio", "--engine", engine],
                          input="\n".join(lines) + "\n", capture_output=True, text=True, cwd=tmp_path, timeout=100)
    assert proc.returncode == 0, proc.stderr
    answers = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(answers) == len(lines), proc.stdout
    return answers


def check_wav(path: Path) -> int:
    with wave.open(str(path), "rb") as wav:
        assert wav.getsampwidth() == 2 and wav.getnchannels() == 1
        assert wav.getnframes() > 0
        return wav.getframerate()


@pytest.mark.parametrize("engine", ["tone", "piper"])
def test_seed_lines_give_a_wav_and_json_answers(tmp_path: Path, engine: str) -> None:
    if engine == "piper" and importlib.util.find_spec("piper") is None:
        pytest.skip("piper-tts is not installed (pip install -e '.[piper]')")
    loaded, result = run_stdio(tmp_path, SEED_LINES, engine)
    assert loaded["type"] == "model_loaded" and loaded["success"] is True
    assert loaded["engine"] == engine and loaded["model_version"] == "1.5"
    assert result["type"] == "result" and result["success"] is True and result["id"] == 1
    wav_path = tmp_path / "test.wav"
    assert Path(result["output_path"]) == wav_path.resolve()
    assert check_wav(wav_path) == result["sample_rate"] == loaded["sample_rate"]
    assert result["duration_s"] > 0
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # the temporary file was renamed


def test_generate_alone_loads_the_engine_and_bad_lines_get_errors(tmp_path: Path) -> None:
    answers = run_stdio(tmp_path, [
        "not json",
        '["a list"]',
        '{"type":"speak"}',
        '{"type":"generate","id":7,"text":"","output_path":"x.wav"}',
        '{"type":"generate","id":8,"text":"Hi","output_path":"out/sub/y.wav","voice_settings":"loud"}',
        '{"type":"generate","id":9,"text":"Hi","output_path":"out/sub/z.wav","voice_settings":{}}',
    ], "tone")
    for answer in answers[:5]:
        assert answer["type"] == "error" and answer["success"] is False and answer["code"] == "bad_request"
    assert answers[3]["id"] == 7 and "text" in answers[3]["error"]
    assert answers[5]["success"] is True and answers[5]["id"] == 9
    check_wav(tmp_path / "out" / "sub" / "z.wav")
    assert not (tmp_path / "x.wav").exists() and not (tmp_path / "out" / "sub" / "y.wav").exists()


def test_unwritable_output_path_is_bad_request_not_internal(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    answers = run_stdio(tmp_path, [
        '{"type":"generate","id":1,"text":"Hi","output_path":"a-file/x.wav"}',
        '{"type":"generate","id":2,"text":"Hi","output_path":"."}',
        '{"type":"generate","id":3,"text":"Hi","output_path":"ok.wav"}',
    ], "tone")
    for answer in answers[:2]:
        assert answer["success"] is False and answer["code"] == "bad_request", answer
        assert "output_path" in answer["error"] and "Traceback" not in answer["error"]
    assert answers[2]["success"] is True


def test_a_failed_load_model_keeps_the_working_engine_and_its_options(tmp_path: Path) -> None:
    answers = run_stdio(tmp_path, [
        '{"type":"load_model","options":{"latency_s":0.01}}',
        '{"type":"generate","id":1,"text":"Before.","output_path":"a.wav"}',
        '{"type":"load_model","options":{"no_such_option":1}}',
        '{"type":"load_model","device":7}',
        '{"type":"generate","id":2,"text":"After.","output_path":"b.wav"}',
        '{"type":"load_model","options":{"latency_s":0}}',
        '{"type":"generate","id":3,"text":"Again.","output_path":"c.wav"}',
    ], "tone")
    assert [a["success"] for a in answers] == [True, True, False, False, True, True, True], answers
    assert answers[2]["code"] == "load_failed" and "no_such_option" in answers[2]["error"]
    assert answers[3]["code"] == "bad_request"
    assert (tmp_path / "b.wav").exists() and (tmp_path / "c.wav").exists()
