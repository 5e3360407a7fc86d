"""What a finished job and a streamed chunk hand back to the caller."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from tts_protocol.messages import Result

if TYPE_CHECKING:
    import numpy as np

BYTES_PER_SAMPLE = 2  # s16le is the only sample format TTSP/2 defines


def _pcm_to_array(pcm: bytes, channels: int) -> "np.ndarray":
    import numpy as np

    samples = np.frombuffer(pcm, dtype="<i2")
    if channels > 1:
        samples = samples[: len(samples) - len(samples) % channels].reshape(-1, channels)
    return samples


@dataclasses.dataclass(frozen=True, slots=True)
class AudioChunk:
    """A piece of a streamed utterance: PCM s16le, in order, no repeats."""

    job_id: str
    attempt: int
    seq: int
    pcm: bytes = dataclasses.field(repr=False)  # audio never goes into logs or reprs
    sample_rate: int
    channels: int = 1

    @property
    def num_frames(self) -> int:
        return len(self.pcm) // (BYTES_PER_SAMPLE * self.channels)

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.sample_rate

    def to_numpy(self) -> "np.ndarray":
        """int16 samples, shape (frames,) for mono or (frames, channels)."""
        return _pcm_to_array(self.pcm, self.channels)


@dataclasses.dataclass(frozen=True, slots=True)
class SynthesisResult:
    """A whole utterance plus the broker's RESULT metadata (worker, engine, timings)."""

    job_id: str
    pcm: bytes = dataclasses.field(repr=False)  # audio never goes into logs or reprs
    sample_rate: int
    channels: int
    meta: Result

    @classmethod
    def from_message(cls, body: Result, payload: bytes) -> "SynthesisResult":
        return cls(job_id=body.job_id, pcm=payload, sample_rate=body.sample_rate, channels=body.channels,
                   meta=body)

    @property
    def num_frames(self) -> int:
        return len(self.pcm) // (BYTES_PER_SAMPLE * self.channels)

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.sample_rate

    @property
    def metadata(self) -> dict[str, Any]:
        """The RESULT body as a plain dict."""
        return self.meta.to_wire()

    def to_numpy(self) -> "np.ndarray":
        """int16 samples, shape (frames,) for mono or (frames, channels)."""
        return _pcm_to_array(self.pcm, self.channels)

    def to_float32(self) -> "np.ndarray":
        """Samples scaled to [-1, 1)."""
        return self.to_numpy().astype("float32") / 32768.0
