"""Per-job generation settings from the job's voice map, with bounds (EngineError when out of range).

| key | type | range | default 1.5 / S1 |
|---|---|---|---|
| seed | int or nil | 0 .. 2**63-1 | nil: a fresh random seed per job |
| temperature | float | 0.1 .. 1.5 | 0.7 / 0.8 |
| top_p | float | 0.1 .. 1.0 | 0.7 / 0.8 |
| repetition_penalty | float | 0.9 .. 1.9 | 1.2 / 1.1 |
| max_new_tokens | int | 1 .. 4096 (codec frames per segment, ~21.5 per second) | 1024 |
| chunk_length | int | 50 .. 1000 (UTF-8 bytes per text segment) | 200 / 300 |

Upstream asserts (0, 2) for temperature and repetition_penalty and (0, 1] for top_p; the ranges above are the
useful part of those. Other keys (e.g. Piper's length_scale) are ignored so one client can talk to any engine.
"""

from __future__ import annotations

import dataclasses
import secrets
from typing import Any, Mapping, Optional

from tts_worker.engines.fish_speech.checkpoint import Family
from tts_worker.engines.options import VoiceReader

MAX_SEED = 2**63 - 1


@dataclasses.dataclass(frozen=True, slots=True)
class GenerationParams:
    """Sampling settings for one job."""

    seed: Optional[int]
    temperature: float
    top_p: float
    repetition_penalty: float
    max_new_tokens: int
    chunk_length: int

    def job_seed(self) -> int:
        """The seed to use: the job's own, or a fresh random one (so each job is independently random)."""
        return self.seed if self.seed is not None else secrets.randbits(63)


_DEFAULTS = {
    Family.V1_5: dict(temperature=0.7, top_p=0.7, repetition_penalty=1.2, max_new_tokens=1024, chunk_length=200),
    Family.S1_MINI: dict(temperature=0.8, top_p=0.8, repetition_penalty=1.1, max_new_tokens=1024, chunk_length=300),
}


def params_from_voice(voice: Mapping[str, Any], family: Family) -> GenerationParams:
    """Read and bound-check the voice settings of one job."""
    defaults = _DEFAULTS[family]
    reader = VoiceReader("fish-speech", voice)
    seed_raw = reader.values.get("seed")
    seed = None if seed_raw is None else reader.int("seed", 0, min=0, max=MAX_SEED)
    return GenerationParams(
        seed=seed,
        temperature=reader.float("temperature", defaults["temperature"], min=0.1, max=1.5),
        top_p=reader.float("top_p", defaults["top_p"], min=0.1, max=1.0),
        repetition_penalty=reader.float("repetition_penalty", defaults["repetition_penalty"], min=0.9, max=1.9),
        max_new_tokens=reader.int("max_new_tokens", int(defaults["max_new_tokens"]), min=1, max=4096),
        chunk_length=reader.int("chunk_length", int(defaults["chunk_length"]), min=50, max=1000),
    )
