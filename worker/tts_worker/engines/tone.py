"""ToneTestEngine: a deterministic TEST engine that plays tones instead of speech.

For tests, benchmarks of the plumbing and fault drills; it never produces speech. Output is 16 kHz mono s16le.

- Pitch comes from the speaker: 220 Hz + (crc32(speaker or "default") mod 440) Hz.
- One chunk per sentence (split after `.`, `!` or `?` followed by white space). A sentence of n characters
  lasts (0.040 + 0.004 * n) * length_scale seconds (length_scale from the job's voice settings, default 1.0),
  so 500 short jobs cost well under a second of synthesis.
- Same text, speaker and voice settings -> the same bytes, always.

Options (all off by default):
- latency_s=S: wait S seconds before the first chunk, in 10 ms steps that honour cancel (a slow engine).
- capacity=N: jobs the worker runs at once (default 1).
- fail_on=MARKER: a job whose text contains MARKER fails with EngineError (code engine_error).
- crash_on=MARKER: the process dies at once (os._exit) when the text contains MARKER (a crashing engine).
- hang_on=MARKER: the job blocks for good, ignoring cancel, when the text contains MARKER (a hung engine).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import zlib
from typing import Any, Iterator, Mapping, Optional

import numpy as np

from tts_worker.engines.base import (
    AudioChunk,
    EngineError,
    EngineInfo,
    SynthesisCancelled,
    SynthesisRequest,
)
from tts_worker.engines.options import OptionReader, VoiceReader

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
BASE_S = 0.040
PER_CHAR_S = 0.004
AMPLITUDE = 0.3
FADE_S = 0.005
CRASH_EXIT_CODE = 86
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_STEP_S = 0.01


def sentence_split(text: str) -> list[str]:
    """Sentences of `text` as the tone engine cuts them: like a real engine, it speaks nothing for a sentence
    without a letter or digit ("...", "-"), so such a text yields no audio at all."""
    return [s for s in (part.strip() for part in _SENTENCE_END.split(text)) if any(c.isalnum() for c in s)]


def speaker_pitch_hz(speaker: Optional[str]) -> float:
    """The tone's frequency for a speaker: stable across runs and machines."""
    return 220.0 + zlib.crc32((speaker or "default").encode("utf-8")) % 440


def sentence_duration_s(sentence: str, length_scale: float = 1.0) -> float:
    """How long the tone for one sentence lasts."""
    return (BASE_S + PER_CHAR_S * len(sentence)) * length_scale


class ToneTestEngine:
    """Test engine: a deterministic sine tone per sentence (pitch from speaker, length from text)."""

    name = "tone"
    model = "tone-v1"
    licence = "Apache-2.0"
    OPTIONS = {"latency_s", "capacity", "fail_on", "crash_on", "hang_on"}

    def __init__(self, *, options: Mapping[str, Any], settings: Any = None) -> None:
        reader = OptionReader(self.name, options, self.OPTIONS)
        self.latency_s = reader.float("latency_s", 0.0, min=0.0, max=3600.0)
        self.capacity = reader.int("capacity", 1, min=1, max=64)
        self.fail_on = reader.str("fail_on")
        self.crash_on = reader.str("crash_on")
        self.hang_on = reader.str("hang_on")
        self._lock = threading.Lock()
        self._jobs = 0
        self._chunks = 0
        self._loaded = False

    def load(self) -> EngineInfo:
        self._loaded = True
        return EngineInfo(engine=self.name, model=self.model, sample_rate=SAMPLE_RATE, device="cpu",
                          licence=self.licence, capacity=self.capacity)

    def synthesize(self, request: SynthesisRequest, cancel: threading.Event) -> Iterator[AudioChunk]:
        text = request.text
        if self.crash_on and self.crash_on in text:
            log.warning("job %s: text contains the crash_on marker: exiting the process now", request.job_id)
            os._exit(CRASH_EXIT_CODE)
        if self.fail_on and self.fail_on in text:
            raise EngineError("text contains the tone engine's fail_on marker")
        voice = VoiceReader(self.name, request.voice)
        length_scale = voice.float("length_scale", 1.0, min=0.05, max=20.0)
        if self.hang_on and self.hang_on in text:
            log.warning("job %s: text contains the hang_on marker: blocking for good", request.job_id)
            threading.Event().wait()  # a hung engine: never returns, never looks at `cancel`
        self._wait(self.latency_s, cancel)
        with self._lock:
            self._jobs += 1
        pitch = speaker_pitch_hz(request.speaker)
        for sentence in sentence_split(text):
            if cancel.is_set():
                raise SynthesisCancelled()
            samples = render_tone(pitch, sentence_duration_s(sentence, length_scale))
            with self._lock:
                self._chunks += 1
            yield AudioChunk(samples=samples, sample_rate=SAMPLE_RATE)

    def deterministic(self, request: SynthesisRequest) -> bool:
        return True  # the whole point of this engine

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"jobs": self._jobs, "chunks": self._chunks, "warm": []}

    def close(self) -> None:
        self._loaded = False

    @staticmethod
    def _wait(seconds: float, cancel: threading.Event) -> None:
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if cancel.wait(min(_STEP_S, left)):
                raise SynthesisCancelled()


def render_tone(pitch_hz: float, duration_s: float) -> np.ndarray:
    """int16 samples of a sine with short fades (no clicks between chunks)."""
    n = max(1, int(round(duration_s * SAMPLE_RATE)))
    t = np.arange(n, dtype=np.float64) / SAMPLE_RATE
    wave = AMPLITUDE * np.sin(2.0 * np.pi * pitch_hz * t)
    fade = min(int(FADE_S * SAMPLE_RATE), n // 2)
    if fade > 0:
        ramp = np.linspace(0.0, 1.0, fade, endpoint=False)
        wave[:fade] *= ramp
        wave[n - fade:] *= ramp[::-1]
    return np.round(wave * 32767.0).astype(np.int16)
