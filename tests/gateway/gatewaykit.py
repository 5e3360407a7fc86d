"""Helpers of the gateway tests (fixtures are in this folder's conftest.py): the API key the gateway fixture
configures, its process handle, and the tone engine's exact audio to compare answers with."""

from __future__ import annotations

import dataclasses
import io
from typing import Optional

import numpy as np
import soundfile

from tts_worker.engines.tone import render_tone, sentence_duration_s, sentence_split, speaker_pitch_hz

from harness import Proc

API_KEY = "sk-gateway-test"


@dataclasses.dataclass
class GatewayProc:
    proc: Proc
    url: str

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"


def tone_pcm(text: str, speaker: Optional[str] = "default", length_scale: float = 1.0) -> bytes:
    """Exactly what the tone engine produces for `text` (s16le, 16 kHz mono)."""
    pitch = speaker_pitch_hz(speaker)
    parts = [render_tone(pitch, sentence_duration_s(s, length_scale)) for s in sentence_split(text)]
    return np.concatenate(parts).astype("<i2").tobytes()


def decode(data: bytes) -> tuple[np.ndarray, int]:
    """Any container libsndfile reads -> (int16 mono samples, sample rate)."""
    samples, rate = soundfile.read(io.BytesIO(data), dtype="int16", always_2d=True)
    return samples[:, 0], int(rate)
