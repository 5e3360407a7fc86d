"""The engine plugin interface: load once, synthesize text into audio chunks, describe itself, close.

An engine is constructed with its options (from `--engine-opt key=value` and settings), loaded once by the
worker, then used from a single synthesis thread. Heavy imports (onnxruntime, torch) belong in `load()` or
the engine module itself, which the registry imports only when that engine is chosen.

Construction: the registry calls `EngineClass(options=..., settings=...)` (keyword arguments): `options` is a
dict of str -> str/bool/int/float (strings from `--engine-opt`, scalars from a RELOAD, so accept both; see
engines/options.py), `settings` the worker's WorkerSettings (device, model_version, semantic_token_cache).
Reject a bad option there or in `load()` with EngineLoadError. A class attribute `licence` (str) is shown by
`tts-worker --list-engines`. After a RELOAD the worker builds a second instance in the same process and
closes the old one, so construction must not rely on module-level state.

Threads: `synthesize()` runs on the worker's synthesis thread(s) (as many as `EngineInfo.capacity`);
`stats()` is called from the worker's I/O thread while a job may be running, so it must only read cheap,
thread-safe figures. `stats()["warm"]` (list of speaker names whose voice data is cached) is lifted into the
heartbeat's top-level `warm` for sticky routing.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, Iterator, Mapping, Optional, Protocol, runtime_checkable

import numpy as np

from tts_protocol.errors import ErrorCode, TtsError

NO_AUDIO_MESSAGE = "the engine produced no audio for this text (nothing speakable in it?)"
"""The message of a `no_audio` failure: text such as "..." or "-" that an engine turns into no samples."""


class EngineError(TtsError):
    """A job the engine cannot do (unknown speaker, bad settings, text it rejects).

    `code` goes to the client as the FAIL/ERROR code; such failures are not retried unless `retryable`.
    """

    def __init__(self, message: str, *, code: ErrorCode = ErrorCode.ENGINE_ERROR, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable


class EngineLoadError(TtsError):
    """The engine cannot start (missing package, bad checkpoint folder): the worker exits non-zero."""


class SynthesisCancelled(TtsError):
    """Raised by an engine that noticed its cancel event."""


@dataclasses.dataclass(frozen=True, slots=True)
class EngineInfo:
    """What a loaded engine tells the broker about itself (READY body)."""

    engine: str
    model: str
    sample_rate: int
    device: str = "cpu"
    licence: str = ""
    channels: int = 1
    capacity: int = 1
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, slots=True)
class SynthesisRequest:
    """One job as the engine sees it."""

    job_id: str
    text: str
    speaker: Optional[str] = None
    voice: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    stream: bool = False
    timeout_s: float = 0.0


@dataclasses.dataclass(frozen=True, slots=True)
class AudioChunk:
    """A piece of synthesized audio: mono or interleaved int16 samples."""

    samples: np.ndarray  # dtype int16, shape (n,) or (n, channels)
    sample_rate: int

    def to_bytes(self) -> bytes:
        return np.ascontiguousarray(self.samples, dtype="<i2").tobytes()


@runtime_checkable
class Engine(Protocol):
    """What every engine plugin implements."""

    name: str

    def load(self) -> EngineInfo:
        """Load the model (once). Raise EngineLoadError with a clear message on failure."""
        ...

    def synthesize(self, request: SynthesisRequest, cancel: threading.Event) -> Iterator[AudioChunk]:
        """Yield audio chunks for one job (one per sentence/segment where the engine can).

        Check `cancel` between chunks and raise SynthesisCancelled when it is set. Raise EngineError for a
        job the engine rejects.
        """
        ...

    def deterministic(self, request: SynthesisRequest) -> bool:
        """True if this request always gives the same audio (the broker may then cache the result).

        Optional: an engine without this method is treated as non-deterministic.
        """
        ...

    def stats(self) -> dict[str, Any]:
        """Engine-specific figures for heartbeats (cache hits, GPU memory...); may be empty."""
        ...

    def close(self) -> None:
        """Release the model; idempotent."""
        ...


def float_to_int16(audio: np.ndarray) -> np.ndarray:
    """Clip float audio in [-1, 1] and convert to int16 (upstream engines forget the clip)."""
    return (np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)
