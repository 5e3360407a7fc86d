"""The blocking client: submit, synthesize, stream, cancel and ask the broker how it is doing."""

from __future__ import annotations

import dataclasses
import queue
import time
from concurrent.futures import Future
from typing import Any, Iterator, Optional

from tts_protocol import Command, Priority
from tts_protocol.messages import JobView, StatusView

from tts_client.core import ClientCore
from tts_client.errors import ClientTimeout
from tts_client.jobspec import VoiceSettings, make_submit
from tts_client.results import AudioChunk, SynthesisResult
from tts_client.settings import ClientSettings

_END = object()


@dataclasses.dataclass(frozen=True, slots=True)
class PingReply:
    """A PONG and how long it took."""

    broker_id: str
    rtt_ms: float
    broker_time_ms: int


def resolve_settings(url: Optional[str], settings: Optional[ClientSettings],
                     overrides: dict[str, Any]) -> ClientSettings:
    """Settings from the environment (or the given object), with the URL and keyword overrides applied."""
    base = settings if settings is not None else ClientSettings()
    updates = dict(overrides)
    if url is not None:
        updates["broker_url"] = url
    if not updates:
        return base
    return ClientSettings.model_validate({**base.model_dump(), **updates})


class JobHandle:
    """A submitted job: its id and the Future of its result."""

    def __init__(self, core: ClientCore, job_id: str, future: Future) -> None:
        self._core = core
        self.job_id = job_id
        self.future = future

    def result(self) -> SynthesisResult:
        """Block until the job ends; raises JobFailed, JobCancelled, JobTimeout, BrokerUnavailable, ..."""
        return self.future.result()

    def done(self) -> bool:
        return self.future.done()

    def cancel(self) -> None:
        """Cancel the job on the broker; result() then raises JobCancelled."""
        self._core.cancel(self.job_id)


class SynthesisStream:
    """Iterate over the audio chunks of one job as they are synthesised; `.result` once iteration ends.

    Chunks come in order and never repeat, even if the job is retried on another worker or resubmitted after a
    broker restart. Leaving a `with` block early, or calling close(), cancels an unfinished job.
    """

    def __init__(self, core: ClientCore, job_id: str, chunks: "queue.SimpleQueue[Any]", future: Future) -> None:
        self._core = core
        self.job_id = job_id
        self._chunks = chunks
        self.future = future
        self._finished = False
        future.add_done_callback(lambda _f: chunks.put(_END))

    def __iter__(self) -> Iterator[AudioChunk]:
        return self

    def __next__(self) -> AudioChunk:
        if self._finished:
            raise StopIteration
        item = self._chunks.get()
        if item is _END:
            self._finished = True
            self.future.result()  # raises the job's error, if any
            raise StopIteration
        return item

    @property
    def result(self) -> SynthesisResult:
        """The whole utterance (blocks until the job ends)."""
        return self.future.result()

    def close(self) -> None:
        if not self.future.done():
            self._core.cancel(self.job_id)

    def __enter__(self) -> "SynthesisStream":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class TtsClient:
    """Blocking client for the tts-broker; safe to share between threads; a context manager.

    TtsClient("tcp://host:5555") or TtsClient(settings=ClientSettings(...)); keyword overrides such as
    timeout_s=30 are applied on top of the environment (TTS_BROKER_URL, TTS_CLIENT_*).
    """

    def __init__(self, url: Optional[str] = None, *, settings: Optional[ClientSettings] = None,
                 **overrides: Any) -> None:
        self.settings = resolve_settings(url, settings, overrides)
        self._core = ClientCore(self.settings)

    @property
    def url(self) -> str:
        return self.settings.broker_url

    @property
    def broker_id(self) -> Optional[str]:
        """The broker_id of the latest PONG; it changes when the broker restarts."""
        return self._core.broker_id

    def _timeout(self, timeout_s: Optional[float]) -> float:
        return self.settings.timeout_s if timeout_s is None else timeout_s

    def _request_timeout(self, timeout_s: Optional[float]) -> float:
        return self.settings.request_timeout_s if timeout_s is None else timeout_s

    def submit(self, text: str, *, speaker: Optional[str] = None, model: Optional[str] = None,
               job_id: Optional[str] = None, priority: str | Priority = Priority.NORMAL, deadline_ms: int = 0,
               attempt_timeout_ms: int = 0, voice: Optional[VoiceSettings] = None,
               cache: Optional[bool] = None, timeout_s: Optional[float] = None) -> JobHandle:
        """Send a job without waiting; job_id is generated unless given (it is the idempotency key)."""
        request = make_submit(self.settings, text, job_id=job_id, speaker=speaker, model=model, priority=priority,
                              deadline_ms=deadline_ms, attempt_timeout_ms=attempt_timeout_ms, voice=voice,
                              cache=cache)
        future = self._core.submit(request, timeout_s=self._timeout(timeout_s))
        return JobHandle(self._core, request.job_id, future)

    def synthesize(self, text: str, *, speaker: Optional[str] = None, model: Optional[str] = None,
                   job_id: Optional[str] = None, priority: str | Priority = Priority.NORMAL, deadline_ms: int = 0,
                   attempt_timeout_ms: int = 0, voice: Optional[VoiceSettings] = None,
                   cache: Optional[bool] = None, timeout_s: Optional[float] = None) -> SynthesisResult:
        """Synthesise one utterance and wait for it."""
        return self.submit(text, speaker=speaker, model=model, job_id=job_id, priority=priority,
                           deadline_ms=deadline_ms, attempt_timeout_ms=attempt_timeout_ms, voice=voice,
                           cache=cache, timeout_s=timeout_s).result()

    def stream(self, text: str, *, speaker: Optional[str] = None, model: Optional[str] = None,
               job_id: Optional[str] = None, priority: str | Priority = Priority.NORMAL, deadline_ms: int = 0,
               attempt_timeout_ms: int = 0, voice: Optional[VoiceSettings] = None,
               cache: Optional[bool] = None, timeout_s: Optional[float] = None) -> SynthesisStream:
        """Synthesise with PARTIAL chunks; iterate the returned stream."""
        request = make_submit(self.settings, text, job_id=job_id, speaker=speaker, model=model, priority=priority,
                              deadline_ms=deadline_ms, attempt_timeout_ms=attempt_timeout_ms, voice=voice,
                              stream=True, cache=cache)
        chunks: queue.SimpleQueue[Any] = queue.SimpleQueue()
        future = self._core.submit(request, timeout_s=self._timeout(timeout_s), sink=chunks.put)
        return SynthesisStream(self._core, request.job_id, chunks, future)

    def cancel(self, job_id: str) -> None:
        """Ask the broker to cancel a job (queued: dropped; running: the worker is told to stop)."""
        self._core.cancel(job_id)

    def job_status(self, job_id: str, *, timeout_s: Optional[float] = None) -> JobView:
        """The broker's view of one job; raises NotFound for a job it does not know."""
        reply = self._core.request(Command.JOB_STATUS, {"job_id": job_id},
                                   timeout_s=self._request_timeout(timeout_s)).result()
        return reply.job

    def jobs(self, state: Optional[str] = None, *, limit: int = 50,
             timeout_s: Optional[float] = None) -> list[JobView]:
        """Recent jobs, newest first; state="failed" is the dead-letter list."""
        reply = self._core.request(Command.JOBS, {"state": state, "limit": limit},
                                   timeout_s=self._request_timeout(timeout_s)).result()
        return list(reply.jobs)

    def retry(self, job_id: str, *, timeout_s: Optional[float] = None) -> JobView:
        """Queue a failed or cancelled job again under the same id (fresh attempts); returns its view.
        Resubmit it (submit with the same job_id) to receive its result."""
        reply = self._core.request(Command.RETRY, {"job_id": job_id},
                                   timeout_s=self._request_timeout(timeout_s)).result()
        return reply.job

    def broker_status(self, *, timeout_s: Optional[float] = None) -> StatusView:
        """Queue depth, job counters and every connected worker."""
        reply = self._core.request(Command.BROKER_STATUS, {}, timeout_s=self._request_timeout(timeout_s)).result()
        return reply.status

    def ping(self, *, timeout_s: Optional[float] = None) -> PingReply:
        """Round trip to the broker; raises BrokerUnavailable if it does not answer in time."""
        started = time.perf_counter()
        pong = self._core.request(Command.PING, {}, timeout_s=self._request_timeout(timeout_s)).result()
        return PingReply(pong.broker_id, (time.perf_counter() - started) * 1000, pong.time_ms)

    def is_alive(self, *, timeout_s: Optional[float] = None) -> bool:
        """True if the broker answers a ping in time."""
        try:
            self.ping(timeout_s=timeout_s)
        except ClientTimeout:
            return False
        return True

    def reload(self, model: Optional[str] = None, options: Optional[VoiceSettings] = None, *,
               timeout_s: Optional[float] = None) -> int:
        """Hot-reload the workers serving `model` (all if None) with `options`; returns how many were told."""
        body = {"model": model, "options": dict(options or {})}
        reply = self._core.request(Command.RELOAD, body, timeout_s=self._request_timeout(timeout_s)).result()
        return reply.workers

    def close(self) -> None:
        """Fail pending calls with ClientClosed and release the socket. Idempotent."""
        self._core.close()

    @property
    def closed(self) -> bool:
        return self._core.closed

    def __enter__(self) -> "TtsClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TtsClient({self.url!r}{', closed' if self.closed else ''})"
