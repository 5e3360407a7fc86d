"""The asyncio client: the same ClientApi and I/O thread as TtsClient, its Futures wrapped for the event loop."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, AsyncIterator, Optional

from tts_client.api import ClientApi, ClientBase, awaitable
from tts_client.core import ClientCore
from tts_client.jobspec import JobOptions, job_options
from tts_client.results import AudioChunk, SynthesisResult

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from tts_client.jobspec import JobKeywords

_END = object()


class AsyncSynthesisStream:
    """`async for chunk in stream`: audio chunks in order, no repeats; `await stream.result()` afterwards.

    Leaving an `async with` block early, or aclose(), cancels an unfinished job.
    """

    def __init__(self, core: ClientCore, job_id: str, chunks: "asyncio.Queue[Any]",
                 future: "asyncio.Future[SynthesisResult]") -> None:
        self._core = core
        self.job_id = job_id
        self._chunks = chunks
        self._future = future
        self._finished = False
        future.add_done_callback(lambda _f: chunks.put_nowait(_END))

    def __aiter__(self) -> AsyncIterator[AudioChunk]:
        return self

    async def __anext__(self) -> AudioChunk:
        if self._finished:
            raise StopAsyncIteration
        item = await self._chunks.get()
        if item is _END:
            self._finished = True
            await self._future  # raises the job's error, if any
            raise StopAsyncIteration
        return item

    async def result(self) -> SynthesisResult:
        """The whole utterance."""
        return await asyncio.shield(self._future)

    async def aclose(self) -> None:
        if not self._future.done():
            self._core.cancel(self.job_id)

    async def __aenter__(self) -> "AsyncSynthesisStream":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class AsyncTtsClient(ClientBase):
    """asyncio client for the tts-broker; an async context manager. Cancelling an awaiting task cancels its job.

    The same constructor, job options (keywords or options=JobOptions(...)) and methods as TtsClient, as
    coroutines.
    """

    async def synthesize(self, text: str, *, options: Optional[JobOptions] = None,
                         **keywords: Unpack[JobKeywords]) -> SynthesisResult:
        """Synthesise one utterance."""
        _job_id, future = self._api.submit(text, job_options(options, keywords))
        return await asyncio.wrap_future(future)

    async def stream(self, text: str, *, options: Optional[JobOptions] = None,
                     **keywords: Unpack[JobKeywords]) -> AsyncSynthesisStream:
        """Synthesise with PARTIAL chunks: `async for chunk in await client.stream(text)`."""
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[Any] = asyncio.Queue()

        def sink(chunk: AudioChunk) -> None:
            loop.call_soon_threadsafe(chunks.put_nowait, chunk)

        job_id, future = self._api.submit(text, job_options(options, keywords), sink=sink)
        return AsyncSynthesisStream(self._api.core, job_id, chunks, asyncio.wrap_future(future))

    # The request calls, declared once in ClientApi (signature and docstring), awaited here.
    job_status = awaitable(ClientApi.job_status)
    jobs = awaitable(ClientApi.jobs)
    retry = awaitable(ClientApi.retry)
    get_result = awaitable(ClientApi.get_result)
    broker_status = awaitable(ClientApi.broker_status)
    ping = awaitable(ClientApi.ping)
    is_alive = awaitable(ClientApi.is_alive)
    reload = awaitable(ClientApi.reload)
    reload_wait = awaitable(ClientApi.reload_wait)
    drain = awaitable(ClientApi.drain)
    pause = awaitable(ClientApi.pause)
    resume = awaitable(ClientApi.resume)

    async def aclose(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    async def __aenter__(self) -> "AsyncTtsClient":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
