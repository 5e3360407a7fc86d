"""Gateway fixtures: a real `tts gateway` process on a port it picks itself, and the tone engine's expected audio.

Test modules import what they use (`from gateway_fixtures import gateway_factory, ...`); pytest then finds
the fixtures. Processes go into conftest's `procs` list, so they are killed at teardown.
"""

from __future__ import annotations

import dataclasses
import io
import json
import sys
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pytest
import soundfile

from tts_worker.engines.tone import render_tone, sentence_duration_s, sentence_split, speaker_pitch_hz

from conftest import BrokerProc, Proc, wait_for

API_KEY = "sk-gateway-test"


@dataclasses.dataclass
class GatewayProc:
    proc: Proc
    url: str

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"


@pytest.fixture
def gateway_factory(tmp_path: Path, procs: list[Proc]) -> Callable[..., GatewayProc]:
    """gateway_factory(broker, MODELS="tts-1=tone", ...): start `tts gateway` on 127.0.0.1:0 and wait until it
    listens. Keyword arguments become TTS_GATEWAY_* variables; API_KEYS defaults to API_KEY."""
    counter = [0]

    def start(broker: BrokerProc, timeout_s: float = 30.0, **env: object) -> GatewayProc:
        counter[0] += 1
        ready = tmp_path / f"gateway-ready-{counter[0]}.json"
        variables = {"API_KEYS": API_KEY, **env}
        args = [sys.executable, "-m", "tts_client", "--broker", broker.frontend, "--log-level", "INFO",
                "gateway", "--listen", "127.0.0.1:0", "--ready-file", str(ready)]
        proc = Proc(args, tmp_path / f"gateway-{counter[0]}.log",
                    {f"TTS_GATEWAY_{k.upper()}": str(v) for k, v in variables.items()})
        procs.append(proc)
        wait_for(lambda: ready.exists() or not proc.alive(), timeout_s, what="gateway ready file")
        if not proc.alive():
            raise AssertionError(f"gateway exited at start:\n{proc.log()}")
        return GatewayProc(proc, json.loads(ready.read_text())["url"])

    return start


def tone_pcm(text: str, speaker: Optional[str] = "default", length_scale: float = 1.0) -> bytes:
    """Exactly what the tone engine produces for `text` (s16le, 16 kHz mono)."""
    pitch = speaker_pitch_hz(speaker)
    parts = [render_tone(pitch, sentence_duration_s(s, length_scale)) for s in sentence_split(text)]
    return np.concatenate(parts).astype("<i2").tobytes()


def decode(data: bytes) -> tuple[np.ndarray, int]:
    """Any container libsndfile reads -> (int16 mono samples, sample rate)."""
    samples, rate = soundfile.read(io.BytesIO(data), dtype="int16", always_2d=True)
    return samples[:, 0], int(rate)
