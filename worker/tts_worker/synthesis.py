"""The synthesis side of a worker: threads that run the engine, fed by a queue, reporting through another.

The I/O thread puts a Task on `submit()`; a synthesis thread runs the engine and puts Chunk/Done/Failed
events on `events`, then calls `notify()` so the I/O thread wakes up (it owns the socket; these threads never
touch ZeroMQ).
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from typing import Callable, Union

from tts_protocol import ErrorCode

from tts_worker.engines.base import (
    Engine,
    EngineError,
    EngineInfo,
    SynthesisCancelled,
    SynthesisRequest,
)

log = logging.getLogger(__name__)

LeaseKey = tuple[str, int]  # (job_id, attempt)


@dataclasses.dataclass(frozen=True, slots=True)
class Task:
    """One leased job for a synthesis thread."""

    key: LeaseKey
    request: SynthesisRequest
    cancel: threading.Event
    stream: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a streaming job's audio, ready to go out as PARTIAL."""

    key: LeaseKey
    seq: int
    sample_rate: int
    channels: int
    pcm: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class Done:
    """A job's whole audio."""

    key: LeaseKey
    sample_rate: int
    channels: int
    pcm: bytes
    gen_ms: int
    deterministic: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Failed:
    """A job that ended without audio (engine error, cancel, engine bug)."""

    key: LeaseKey
    code: ErrorCode
    message: str
    retryable: bool
    gen_ms: int
    cancelled: bool = False


Event = Union[Chunk, Done, Failed]
_STOP = object()
_MAX_MESSAGE = 300


class SynthesisRunner:
    """`info.capacity` threads running one engine; stop() ends them once their current job is done."""

    def __init__(self, engine: Engine, info: EngineInfo, notify: Callable[[], None], *, name: str = "synth") -> None:
        self.engine = engine
        self.info = info
        self.events: "queue.Queue[Event]" = queue.Queue()
        self._tasks: "queue.Queue[object]" = queue.Queue()
        self._notify = notify
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True)
            for i in range(max(1, info.capacity))
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, task: Task) -> None:
        self._tasks.put(task)

    def stop(self, timeout_s: float = 5.0) -> bool:
        """Ask every thread to finish and wait; False if one is still running (a hung engine)."""
        for _ in self._threads:
            self._tasks.put(_STOP)
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def _emit(self, event: Event) -> None:
        self.events.put(event)
        self._notify()

    def _run(self) -> None:
        while True:
            item = self._tasks.get()
            if item is _STOP:
                return
            assert isinstance(item, Task)
            self._emit(self._synthesize(item))

    def _synthesize(self, task: Task) -> Event:
        job_id = task.key[0]
        started = time.monotonic()

        def elapsed_ms() -> int:
            return int((time.monotonic() - started) * 1000)

        sample_rate, channels = self.info.sample_rate, self.info.channels
        pieces: list[bytes] = []
        try:
            if task.cancel.is_set():
                raise SynthesisCancelled()
            for seq, chunk in enumerate(self.engine.synthesize(task.request, task.cancel)):
                if seq == 0:
                    sample_rate = chunk.sample_rate
                elif chunk.sample_rate != sample_rate:
                    raise EngineError(f"engine changed sample rate mid-job ({sample_rate} -> {chunk.sample_rate})",
                                      code=ErrorCode.INTERNAL, retryable=True)
                pcm = chunk.to_bytes()
                pieces.append(pcm)
                if task.stream and not task.cancel.is_set():
                    self._emit(Chunk(task.key, seq, sample_rate, channels, pcm))
                if task.cancel.is_set():
                    raise SynthesisCancelled()
        except SynthesisCancelled:
            log.info("job %s: synthesis stopped on cancel after %d ms", job_id, elapsed_ms())
            return Failed(task.key, ErrorCode.CANCELLED, "cancelled", False, elapsed_ms(), cancelled=True)
        except EngineError as exc:
            log.info("job %s: engine rejected the job: %s", job_id, _clip(str(exc)))
            return Failed(task.key, ErrorCode.parse(exc.code), _clip(str(exc)), exc.retryable, elapsed_ms())
        except Exception as exc:  # an engine bug must fail the job, never the worker
            log.exception("job %s: unexpected engine error", job_id)
            return Failed(task.key, ErrorCode.INTERNAL, _clip(f"{type(exc).__name__}: {exc}"), True, elapsed_ms())
        gen_ms = elapsed_ms()
        return Done(task.key, sample_rate, channels, b"".join(pieces), gen_ms, self._deterministic(task))

    def _deterministic(self, task: Task) -> bool:
        """Whether the engine promises the same audio for the same request (lets the broker cache it)."""
        check = getattr(self.engine, "deterministic", None)
        try:
            return bool(check(task.request)) if check is not None else False
        except Exception:  # a wrong answer here only costs a cache entry
            return False


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."
