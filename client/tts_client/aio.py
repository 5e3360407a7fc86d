"""The asyncio client: the same I/O thread as TtsClient, its Futures wrapped for the event loop."""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator, Optional

from tts_protocol import Command, Priority
from tts_protocol.messages import JobView, StatusView

from tts_client.client import PingReply, resolve_settings
from tts_client.core import ClientCore
from tts_client.errors import ClientTimeout
from tts_client.jobspec import VoiceSettings, make_submit
from tts_client.results import AudioChunk, SynthesisResult
from tts_client.settings import ClientSettings

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


class AsyncTtsClient:
    """asyncio client for the tts-broker; an async context manager. Cancelling an awaiting task cancels its job."""

    def __init__(self, url: Optional[str] = None, *, settings: Optional[ClientSettings] = None,
                 **overrides: Any) -> None:
        self.settings = resolve_settings(url, settings, overrides)
        self._core = ClientCore(self.settings)

    @property
    def url(self) -> str:
        return self.settings.broker_url

    def _timeout(self, timeout_s: Optional[float]) -> float:
        return self.settings.timeout_s if timeout_s is None else timeout_s

    def _request_timeout(self, timeout_s: Optional[float]) -> float:
        return self.settings.request_timeout_s if timeout_s is None else timeout_s

    async def synthesize(self, text: str, *, speaker: Optional[str] = None, model: Optional[str] = None,
                         job_id: Optional[str] = None, priority: str | Priority = Priority.NORMAL,
                         deadline_ms: int = 0, attempt_timeout_ms: int = 0,
                         voice: Optional[VoiceSettings] = None, cache: Optional[bool] = None,
                         timeout_s: Optional[float] = None) -> SynthesisResult:
        """Synthesise one utterance."""
        request = make_submit(self.settings, text, job_id=job_id, speaker=speaker, model=model, priority=priority,
                              deadline_ms=deadline_ms, attempt_timeout_ms=attempt_timeout_ms, voice=voice,
                              cache=cache)
        return await asyncio.wrap_future(self._core.submit(request, timeout_s=self._timeout(timeout_s)))

    async def stream(self, text: str, *, speaker: Optional[str] = None, model: Optional[str] = None,
                     job_id: Optional[str] = None, priority: str | Priority = Priority.NORMAL, deadline_ms: int = 0,
                     attempt_timeout_ms: int = 0, voice: Optional[VoiceSettings] = None,
                     cache: Optional[bool] = None, timeout_s: Optional[float] = None) -> AsyncSynthesisStream:
        """Synthesise with PARTIAL chunks: `async for chunk in await client.stream(text)`."""
        request = make_submit(self.settings, text, job_id=job_id, speaker=speaker, model=model, priority=priority,
                              deadline_ms=deadline_ms, attempt_timeout_ms=attempt_timeout_ms, voice=voice,
                              stream=True, cache=cache)
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[Any] = asyncio.Queue()

        def sink(chunk: AudioChunk) -> None:
            loop.call_soon_threadsafe(chunks.put_nowait, chunk)

        future = self._core.submit(request, timeout_s=self._timeout(timeout_s), sink=sink)
        return AsyncSynthesisStream(self._core, request.job_id, chunks, asyncio.wrap_future(future))

    def cancel(self, job_id: str) -> None:
        """Ask the broker to cancel a job."""
        self._core.cancel(job_id)

    async def _request(self, command: Command, body: dict[str, Any], timeout_s: Optional[float]) -> Any:
        future = self._core.request(command, body, timeout_s=self._request_timeout(timeout_s))
        return await asyncio.wrap_future(future)

    async def job_status(self, job_id: str, *, timeout_s: Optional[float] = None) -> JobView:
        return (await self._request(Command.JOB_STATUS, {"job_id": job_id}, timeout_s)).job

    async def jobs(self, state: Optional[str] = None, *, limit: int = 50,
                   timeout_s: Optional[float] = None) -> list[JobView]:
        return list((await self._request(Command.JOBS, {"state": state, "limit": limit}, timeout_s)).jobs)

    async def retry(self, job_id: str, *, timeout_s: Optional[float] = None) -> JobView:
        return (await self._request(Command.RETRY, {"job_id": job_id}, timeout_s)).job

    async def broker_status(self, *, timeout_s: Optional[float] = None) -> StatusView:
        return (await self._request(Command.BROKER_STATUS, {}, timeout_s)).status

    async def ping(self, *, timeout_s: Optional[float] = None) -> PingReply:
        started = time.perf_counter()
        pong = await self._request(Command.PING, {}, timeout_s)
        return PingReply(pong.broker_id, (time.perf_counter() - started) * 1000, pong.time_ms)

    async def is_alive(self, *, timeout_s: Optional[float] = None) -> bool:
        try:
            await self.ping(timeout_s=timeout_s)
        except ClientTimeout:
            return False
        return True

    async def reload(self, model: Optional[str] = None, options: Optional[VoiceSettings] = None, *,
                     timeout_s: Optional[float] = None) -> int:
        body = {"model": model, "options": dict(options or {})}
        return (await self._request(Command.RELOAD, body, timeout_s)).workers

    def close(self) -> None:
        """Fail pending calls with ClientClosed and release the socket. Idempotent (blocks briefly)."""
        self._core.close()

    async def aclose(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._core.close)

    @property
    def closed(self) -> bool:
        return self._core.closed

    async def __aenter__(self) -> "AsyncTtsClient":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
