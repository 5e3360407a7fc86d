"""Broker PCM (s16le) -> the bytes an OpenAI response_format asks for.

pcm and wav stream: a chunk goes out as soon as the broker hands it over (wav opens with a header whose sizes
are 0xFFFFFFFF, "length unknown", as streaming WAV servers do; libsndfile, ffmpeg and Python's wave read it).
flac, mp3 and opus need the whole utterance (libsndfile writes their headers last), so they are encoded once
the job is done. Ogg Opus takes only 8, 12, 16, 24 or 48 kHz, so other rates (Piper's 22,050 Hz) are
resampled to 48 kHz first. aac is not offered: libsndfile has no AAC encoder.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Optional

import numpy as np

from tts_client.audio import FORMATS, encode_pcm, pcm_frames

OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
UNKNOWN_SIZE = 0xFFFFFFFF


@dataclasses.dataclass(frozen=True, slots=True)
class AudioFormat:
    """One response_format: its media type and how it is made."""

    name: str
    media_type: str
    streams: bool
    container: str = ""
    subtype: str = ""


RESPONSE_FORMATS: dict[str, AudioFormat] = {
    "pcm": AudioFormat("pcm", "audio/pcm", streams=True),
    "wav": AudioFormat("wav", "audio/wav", streams=True),
    "flac": AudioFormat("flac", "audio/flac", streams=False, container=FORMATS["flac"][0],
                        subtype=FORMATS["flac"][1]),
    "mp3": AudioFormat("mp3", "audio/mpeg", streams=False, container=FORMATS["mp3"][0], subtype=FORMATS["mp3"][1]),
    "opus": AudioFormat("opus", "audio/ogg", streams=False, container="OGG", subtype="OPUS"),
}
UNSUPPORTED_FORMATS = {"aac": "aac is not available here (libsndfile has no AAC encoder); use mp3, opus, flac, "
                              "wav or pcm"}


def wav_stream_header(sample_rate: int, channels: int = 1) -> bytes:
    """A 44-byte PCM WAV header for a stream of unknown length."""
    block_align = channels * 2
    return (b"RIFF" + struct.pack("<I", UNKNOWN_SIZE) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * block_align,
                                    block_align, 16)
            + b"data" + struct.pack("<I", UNKNOWN_SIZE))


def resample(pcm: bytes, from_rate: int, to_rate: int, channels: int = 1) -> bytes:
    """Linear-interpolation resampling of s16le PCM (enough for speech going up to an Opus rate)."""
    if from_rate == to_rate or not pcm:
        return pcm
    frames = pcm_frames(pcm, channels).astype(np.float64)
    n_in = frames.shape[0]
    n_out = max(1, int(round(n_in * to_rate / from_rate)))
    positions = np.arange(n_out, dtype=np.float64) * (from_rate / to_rate)
    source = np.arange(n_in, dtype=np.float64)
    out = np.stack([np.interp(positions, source, frames[:, c]) for c in range(channels)], axis=1)
    return np.clip(np.round(out), -32768, 32767).astype("<i2").tobytes()


def encode_whole(fmt: AudioFormat, pcm: bytes, sample_rate: int, channels: int = 1) -> bytes:
    """A complete file in a non-streaming format (flac, mp3, opus)."""
    rate = sample_rate
    if fmt.name == "opus" and rate not in OPUS_RATES:
        pcm, rate = resample(pcm, rate, 48000, channels), 48000
    return encode_pcm(pcm, rate, channels, container=fmt.container, subtype=fmt.subtype)


class StreamEncoder:
    """Turns successive PCM chunks into the bytes of a streaming format (pcm or wav), optionally resampled."""

    def __init__(self, fmt: AudioFormat, *, pcm_sample_rate: int = 0) -> None:
        if not fmt.streams:
            raise ValueError(f"{fmt.name} does not stream")
        self.fmt = fmt
        self.target_rate = pcm_sample_rate  # 0: the engine's own rate
        self._started = False
        self.source_rate: Optional[int] = None

    def output_rate(self, source_rate: int) -> int:
        return self.target_rate or source_rate

    def chunk(self, pcm: bytes, sample_rate: int, channels: int = 1) -> bytes:
        """The bytes to send for one chunk (the first one carries the WAV header)."""
        if self.source_rate is None:
            self.source_rate = sample_rate
        out_rate = self.output_rate(sample_rate)
        data = resample(pcm, sample_rate, out_rate, channels) if out_rate != sample_rate else pcm
        if not self._started:
            self._started = True
            if self.fmt.name == "wav":
                return wav_stream_header(out_rate, channels) + data
        return data
