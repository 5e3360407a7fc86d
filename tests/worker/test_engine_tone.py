"""The tone TEST engine: determinism, duration formula, chunking, options and fault markers."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from tts_worker.engines.base import EngineError, EngineLoadError, SynthesisCancelled, SynthesisRequest
from tts_worker.engines.tone import (
    CRASH_EXIT_CODE,
    SAMPLE_RATE,
    ToneTestEngine,
    sentence_duration_s,
    speaker_pitch_hz,
)

pytestmark = pytest.mark.timeout(30)


def synth(engine: ToneTestEngine, text: str, speaker: str | None = None, voice: dict | None = None,
          cancel: threading.Event | None = None) -> list[np.ndarray]:
    request = SynthesisRequest(job_id="t-1", text=text, speaker=speaker, voice=voice or {})
    return [c.samples for c in engine.synthesize(request, cancel or threading.Event())]


def loaded(**options: object) -> ToneTestEngine:
    engine = ToneTestEngine(options=options)
    engine.load()
    return engine


@pytest.mark.unit
def test_info_names_a_test_engine() -> None:
    engine = ToneTestEngine(options={})
    info = engine.load()
    assert (info.engine, info.model, info.sample_rate, info.channels, info.capacity) == ("tone", "tone-v1", 16000, 1, 1)
    assert info.licence == "Apache-2.0"
    assert "TEST" in (ToneTestEngine.__doc__ or "").upper()
    assert engine.stats()["warm"] == []


@pytest.mark.unit
def test_same_input_same_bytes_and_speaker_sets_pitch() -> None:
    engine = loaded()
    a = b"".join(c.tobytes() for c in synth(engine, "Hello there. How are you?", "alice", {"length_scale": 1.0}))
    b = b"".join(c.tobytes() for c in synth(loaded(), "Hello there. How are you?", "alice", {"length_scale": 1.0}))
    assert a == b
    other = b"".join(c.tobytes() for c in synth(engine, "Hello there. How are you?", "bob"))
    assert len(other) == len(a) and other != a
    # The dominant frequency is the speaker's pitch.
    samples = synth(engine, "x" * 240, "alice")[0].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples))
    peak_hz = np.argmax(spectrum) * SAMPLE_RATE / len(samples)
    assert abs(peak_hz - speaker_pitch_hz("alice")) < 5


@pytest.mark.unit
def test_duration_follows_text_and_length_scale() -> None:
    engine = loaded()
    for text in ("Hi", "A somewhat longer line of dialogue", "x" * 500):
        (chunk,) = synth(engine, text)
        assert len(chunk) == round((0.040 + 0.004 * len(text)) * SAMPLE_RATE)
    (slow,) = synth(engine, "Hello world", voice={"length_scale": 2.0})
    assert len(slow) == round(sentence_duration_s("Hello world", 2.0) * SAMPLE_RATE)
    with pytest.raises(EngineError):
        synth(engine, "Hello", voice={"length_scale": "fast"})
    with pytest.raises(EngineError):
        synth(engine, "Hello", voice={"length_scale": 0})


@pytest.mark.unit
def test_one_chunk_per_sentence_and_audible() -> None:
    chunks = synth(loaded(), "One. Two! Three? Four")
    assert len(chunks) == 4
    for chunk in chunks:
        assert chunk.dtype == np.int16
        assert np.sqrt(np.mean(chunk.astype(np.float64) ** 2)) > 3000


@pytest.mark.unit
def test_latency_honours_cancel() -> None:
    engine = loaded(latency_s="5")
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(SynthesisCancelled):
        synth(engine, "slow line", cancel=cancel)
    assert time.monotonic() - started < 1.5


@pytest.mark.unit
def test_fail_marker_and_bad_options() -> None:
    engine = loaded(fail_on="BOOM")
    with pytest.raises(EngineError) as info:
        synth(engine, "this will BOOM now")
    assert info.value.code == "engine_error" and not info.value.retryable
    assert synth(engine, "this is fine")
    with pytest.raises(EngineLoadError, match="unknown option"):
        ToneTestEngine(options={"latency": "1"})
    with pytest.raises(EngineLoadError, match="latency_s"):
        ToneTestEngine(options={"latency_s": "soon"})
    assert ToneTestEngine(options={"capacity": 3}).load().capacity == 3


def test_crash_marker_kills_the_process() -> None:
    code = (
        "import threading\n"
        "from tts_worker.engines.tone import ToneTestEngine\n"
        "from tts_worker.engines.base import SynthesisRequest\n"
        "e = ToneTestEngine(options={'crash_on': 'CRASH'}); e.load()\n"
        "list(e.synthesize(SynthesisRequest(job_id='x', text='a CRASH here'), threading.Event()))\n"
        "print('survived')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    assert done.returncode == CRASH_EXIT_CODE
    assert "survived" not in done.stdout


@pytest.mark.unit
def test_hang_marker_ignores_cancel() -> None:
    engine = loaded(hang_on="HANG")
    cancel = threading.Event()
    finished = threading.Event()

    def run() -> None:
        try:
            synth(engine, "HANG forever", cancel=cancel)
        finally:
            finished.set()

    threading.Thread(target=run, daemon=True).start()
    cancel.set()
    assert not finished.wait(0.5)


@pytest.mark.unit
def test_five_hundred_jobs_are_cheap() -> None:
    engine = loaded()
    started = time.monotonic()
    for i in range(500):
        synth(engine, f"Line number {i}. It has two sentences.")
    assert time.monotonic() - started < 5
