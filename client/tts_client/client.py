"""The blocking client: submit, synthesize, stream, cancel and ask the broker how it is doing."""

from __future__ import annotations

import queue
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Iterator, Optional

from tts_client.api import ClientApi, ClientBase, PingReply, blocking, resolve_settings
from tts_client.core import ClientCore
from tts_client.jobspec import JobOptions, job_options
from tts_client.results import AudioChunk, SynthesisResult

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from tts_client.jobspec import JobKeywords

__all__ = ["JobHandle", "PingReply", "SynthesisStream", "TtsClient", "resolve_settings"]

_END = object()


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


class TtsClient(ClientBase):
    """Blocking client for the tts-broker; safe to share between threads; a context manager.

    TtsClient("tcp://host:5555") or TtsClient(settings=ClientSettings(...)); keyword overrides such as
    timeout_s=30 are applied on top of the environment (TTS_BROKER_URL, TTS_CLIENT_*).

    Jobs take their options as keywords (speaker=, model=, job_id=, priority=, deadline_ms=,
    attempt_timeout_ms=, voice=, cache=, timeout_s=), as options=JobOptions(...), or both (keywords win).
    """

    def submit(self, text: str, *, options: Optional[JobOptions] = None,
               **keywords: Unpack[JobKeywords]) -> JobHandle:
        """Send a job without waiting; job_id is generated unless given (it is the idempotency key)."""
        job_id, future = self._api.submit(text, job_options(options, keywords))
        return JobHandle(self._api.core, job_id, future)

    def synthesize(self, text: str, *, options: Optional[JobOptions] = None,
                   **keywords: Unpack[JobKeywords]) -> SynthesisResult:
        """Synthesise one utterance and wait for it."""
        return self.submit(text, options=options, **keywords).result()

    def stream(self, text: str, *, options: Optional[JobOptions] = None,
               **keywords: Unpack[JobKeywords]) -> SynthesisStream:
        """Synthesise with PARTIAL chunks; iterate the returned stream."""
        chunks: queue.SimpleQueue[Any] = queue.SimpleQueue()
        job_id, future = self._api.submit(text, job_options(options, keywords), sink=chunks.put)
        return SynthesisStream(self._api.core, job_id, chunks, future)

    # The request calls, declared once in ClientApi (signature and docstring), waited for here.
    job_status = blocking(ClientApi.job_status)
    jobs = blocking(ClientApi.jobs)
    retry = blocking(ClientApi.retry)
    get_result = blocking(ClientApi.get_result)
    broker_status = blocking(ClientApi.broker_status)
    ping = blocking(ClientApi.ping)
    is_alive = blocking(ClientApi.is_alive)
    reload = blocking(ClientApi.reload)
    reload_wait = blocking(ClientApi.reload_wait)
    drain = blocking(ClientApi.drain)
    pause = blocking(ClientApi.pause)
    resume = blocking(ClientApi.resume)

    def __enter__(self) -> "TtsClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
