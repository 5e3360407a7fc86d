"""One speech request: validated, routed, and answered whole, streamed chunk by chunk, or as server-sent events.

The status line waits for the first audio chunk, so an error before any audio still gets its proper code; one
after it aborts the connection (a truncated body the client notices).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import logging
from typing import Any, AsyncIterator, Awaitable, Callable, Optional

from fastapi.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from tts_client.aio import AsyncSynthesisStream
from tts_client.errors import TtsClientError
from tts_client.results import AudioChunk
from tts_gateway.catalog import ModelRoute
from tts_gateway.encoding import RESPONSE_FORMATS, AudioFormat, StreamEncoder, encode_whole
from tts_gateway.errors import bad_request, from_client_error
from tts_gateway.schema import VoiceRef
from tts_gateway.state import Gateway

log = logging.getLogger(__name__)


class AudioStreamResponse(StreamingResponse):
    """A StreamingResponse that always closes its stream and frees its slot, however the send ends."""

    def __init__(self, body: AsyncIterator[bytes], *, on_close: Callable[[], Awaitable[None]],
                 **kwargs: Any) -> None:
        super().__init__(body, **kwargs)
        self._body = body
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with contextlib.suppress(Exception):
                await self._body.aclose()  # type: ignore[attr-defined]
            await self._on_close()


async def speak(gateway: Gateway, body: Any) -> Response:
    """Validate and route one speech request, then answer it with audio."""
    settings = gateway.settings
    text: str = body.input
    if not text.strip():
        raise bad_request("input is empty or only white space", param="input")
    if len(text) > settings.max_input_chars:
        raise bad_request(f"input is {len(text)} characters; the limit is {settings.max_input_chars}",
                          param="input", code="string_above_max_length")
    fmt = RESPONSE_FORMATS[body.response_format]
    route = gateway.catalog.route(body.model)
    voice_name = body.voice.id if isinstance(body.voice, VoiceRef) else body.voice
    speaker = gateway.catalog.speaker(voice_name)
    voice = gateway.catalog.voice_settings(route, float(body.speed))
    gateway.in_flight.acquire()
    handed_over = False  # a streaming response frees the slot itself when it is done sending
    try:
        await gateway.require_worker(route)
        job = Job(gateway, text=text, speaker=speaker, route=route, voice=voice)
        if body.stream_format == "sse":
            response = await job.sse(fmt)
        elif fmt.streams:
            response = await job.streamed(fmt)
        else:
            return await job.whole(fmt)
        handed_over = True
        return response
    finally:
        if not handed_over:
            gateway.in_flight.release()


class Job:
    """One speech job on the broker, answered in one of three ways."""

    def __init__(self, gateway: Gateway, *, text: str, speaker: str, route: ModelRoute,
                 voice: dict[str, Any]) -> None:
        assert gateway.client is not None
        self.gateway = gateway
        self.client = gateway.client
        self.text = text
        self.job_id = gateway.next_job_id()
        self.kwargs: dict[str, Any] = dict(
            speaker=speaker, model=route.routing_key, voice=voice, job_id=self.job_id,
            deadline_ms=int(gateway.settings.request_timeout_s * 1000))

    def headers(self, sample_rate: int, channels: int) -> dict[str, str]:
        return {"X-Job-Id": self.job_id, "X-Sample-Rate": str(sample_rate), "X-Channels": str(channels)}

    async def whole(self, fmt: AudioFormat) -> Response:
        try:
            result = await self.client.synthesize(self.text, **self.kwargs)
        except TtsClientError as exc:
            raise from_client_error(exc) from exc
        # Off the event loop: libsndfile releases the GIL, so other requests go on meanwhile.
        data = await asyncio.to_thread(encode_whole, fmt, result.pcm, result.sample_rate, result.channels)
        return Response(data, media_type=fmt.media_type, headers=self.headers(result.sample_rate, result.channels))

    async def _first(self) -> tuple[AsyncSynthesisStream, Optional[AudioChunk], int, int]:
        """Start the stream and wait for its first chunk (None: it ended without one); its rate and channels."""
        try:
            stream = await self.client.stream(self.text, **self.kwargs)
        except TtsClientError as exc:
            raise from_client_error(exc) from exc
        try:
            first = await stream.__anext__()
            return stream, first, first.sample_rate, first.channels
        except StopAsyncIteration:
            result = await stream.result()
            return stream, None, result.sample_rate, result.channels
        except TtsClientError as exc:
            await stream.aclose()
            raise from_client_error(exc) from exc
        except BaseException:
            await stream.aclose()
            raise

    async def _finish(self, stream: AsyncSynthesisStream) -> None:
        """After a streamed answer, however it ended: cancel an unfinished job (a client that went away before
        the body started never ran the body's own cleanup) and free the request's slot."""
        try:
            await stream.aclose()
        finally:
            self.gateway.in_flight.release()

    async def _chunks(self, stream: AsyncSynthesisStream, first: Optional[AudioChunk]
                      ) -> AsyncIterator[tuple[bytes, int, int]]:
        """(pcm, sample_rate, channels) of every chunk; an empty utterance yields one empty chunk."""
        try:
            if first is None:
                result = await stream.result()
                yield result.pcm, result.sample_rate, result.channels
                return
            yield first.pcm, first.sample_rate, first.channels
            async for chunk in stream:
                yield chunk.pcm, chunk.sample_rate, chunk.channels
        finally:
            await stream.aclose()

    async def streamed(self, fmt: AudioFormat) -> Response:
        stream, first, rate, channels = await self._first()
        encoder = StreamEncoder(fmt, pcm_sample_rate=self.gateway.settings.pcm_sample_rate if fmt.name == "pcm"
                                else 0)

        async def body() -> AsyncIterator[bytes]:
            try:
                async for pcm, sample_rate, chans in self._chunks(stream, first):
                    yield encoder.chunk(pcm, sample_rate, chans)
            except TtsClientError as exc:
                log.warning("job %s failed after its first audio; aborting the response: %s", self.job_id, exc)
                raise

        return AudioStreamResponse(body(), on_close=functools.partial(self._finish, stream), media_type=fmt.media_type,
                                   headers=self.headers(encoder.output_rate(rate), channels))

    async def sse(self, fmt: AudioFormat) -> Response:
        """Server-sent events: speech.audio.delta with base64 audio, then speech.audio.done (or an error)."""
        stream, first, rate, channels = await self._first()

        def event(data: dict[str, Any]) -> bytes:
            return f"data: {json.dumps(data)}\n\n".encode()

        async def body() -> AsyncIterator[bytes]:
            encoder = StreamEncoder(fmt, pcm_sample_rate=self.gateway.settings.pcm_sample_rate
                                    if fmt.name == "pcm" else 0) if fmt.streams else None
            whole: list[bytes] = []
            try:
                async for pcm, sample_rate, chans in self._chunks(stream, first):
                    if encoder is not None:
                        yield event({"type": "speech.audio.delta",
                                     "audio": base64.b64encode(encoder.chunk(pcm, sample_rate, chans)).decode()})
                    else:
                        whole.append(pcm)
                if encoder is None:
                    data = await asyncio.to_thread(encode_whole, fmt, b"".join(whole), rate, channels)
                    yield event({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()})
                usage = {"input_tokens": len(self.text), "output_tokens": 0, "total_tokens": len(self.text)}
                yield event({"type": "speech.audio.done", "usage": usage})
            except TtsClientError as exc:
                error = from_client_error(exc)
                yield event({"type": "error", "error": {"message": error.message, "type": error.type,
                                                        "param": None, "code": error.code}})

        return AudioStreamResponse(body(), on_close=functools.partial(self._finish, stream),
                                   media_type="text/event-stream",
                                   headers={**self.headers(rate, channels), "Cache-Control": "no-cache"})
