"""The blocking client: submit, synthesize, stream, cancel and ask the broker how it is doing."""

from __future__ import annotations

import queue
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Iterator, Optional

from tts_protocol.messages import JobView, ReloadReply, StatusView

from tts_client.api import ClientBase, PingReply, resolve_settings
from tts_client.core import ClientCore
from tts_client.jobspec import JobOptions, VoiceSettings, job_options
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

    def job_status(self, job_id: str, *, timeout_s: Optional[float] = None) -> JobView:
        """The broker's view of one job; raises NotFound for a job it does not know."""
        return self._api.job_status(job_id, timeout_s).result()

    def jobs(self, state: Optional[str] = None, *, limit: int = 50,
             timeout_s: Optional[float] = None) -> list[JobView]:
        """Recent jobs, newest first; state="failed" is the dead-letter list."""
        return self._api.jobs(state, limit, timeout_s).result()

    def retry(self, job_id: str, *, timeout_s: Optional[float] = None) -> JobView:
        """Queue a failed or cancelled job again under the same id (fresh attempts); returns its view.
        Resubmit it (submit with the same job_id) to receive its result."""
        return self._api.retry(job_id, timeout_s).result()

    def get_result(self, job_id: str, *, timeout_s: Optional[float] = None) -> SynthesisResult:
        """A finished job's audio by its id alone; NotFound once the broker no longer retains it."""
        return self._api.get_result(job_id, timeout_s).result()

    def broker_status(self, *, timeout_s: Optional[float] = None, workers_offset: int = 0,
                      workers_limit: Optional[int] = None, worker_prefix: Optional[str] = None) -> StatusView:
        """Queue depth, job counters, the fleet's summary and one page of workers (as many as fit a reply).

        `worker_count` is the whole fleet; page on with workers_offset=offset+len(workers)."""
        return self._api.broker_status(timeout_s, workers_offset=workers_offset, workers_limit=workers_limit,
                                       worker_prefix=worker_prefix).result()

    def ping(self, *, timeout_s: Optional[float] = None) -> PingReply:
        """Round trip to the broker; raises BrokerUnavailable if it does not answer in time."""
        return self._api.ping(timeout_s).result()

    def is_alive(self, *, timeout_s: Optional[float] = None) -> bool:
        """True if the broker answers a ping in time."""
        return self._api.is_alive(timeout_s).result()

    def reload(self, model: Optional[str] = None, options: Optional[VoiceSettings] = None, *,
               timeout_s: Optional[float] = None) -> int:
        """Hot-reload the workers serving `model` (all if None) with `options`; returns how many were told."""
        return self._api.reload(model, options, timeout_s).result()

    def reload_wait(self, model: Optional[str] = None, options: Optional[VoiceSettings] = None, *,
                    wait_s: float = 120.0, timeout_s: Optional[float] = None) -> ReloadReply:
        """Hot-reload and wait until each told worker is back: the reply's `outcomes` say how each one did
        (reloaded, failed with its error, or missing after wait_s)."""
        return self._api.reload_wait(model, options, wait_s, timeout_s).result()
    def drain(self, worker: Optional[str] = None, *, host: Optional[str] = None,
              timeout_s: Optional[float] = None) -> list[str]:
        """Drain one worker (worker_id or name) or every worker of `host`: no new jobs, finish, then leave.

        Returns the ids of the drained workers; RemoteError `not_found` if none matched."""
        return list(self._api.drain(worker, host, timeout_s).result().workers)

    def pause(self, model: str, *, timeout_s: Optional[float] = None) -> list[str]:
        """Stop dispatching jobs queued for routing key `model` (they wait); returns the paused keys."""
        return list(self._api.pause(model, timeout_s).result().paused)

    def resume(self, model: str, *, timeout_s: Optional[float] = None) -> list[str]:
        """Dispatch jobs for `model` again; returns the keys still paused."""
        return list(self._api.resume(model, timeout_s).result().paused)

    def __enter__(self) -> "TtsClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
