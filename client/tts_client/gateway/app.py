"""The gateway's ASGI app (FastAPI): OpenAI's `POST /v1/audio/speech` and friends, in front of the broker.

It is a client of the broker like any other (one AsyncTtsClient for the whole process). A request is
checked (auth, limits, body), routed (model -> routing key, voice -> speaker, speed -> length_scale), and
answered with audio: pcm and wav stream chunk by chunk as the broker hands them over, the other formats are
encoded when the job is done. The status line waits for the first audio chunk, so an error before any audio
still gets its proper code; one after it aborts the connection (a truncated body the client notices).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hmac
import itertools
import json
import logging
import secrets
from typing import Annotated, Any, AsyncIterator, Awaitable, Callable, Literal, Optional, Union

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, create_model
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from tts_client.aio import AsyncSynthesisStream, AsyncTtsClient
from tts_client.errors import TtsClientError
from tts_client.gateway import errors
from tts_client.gateway.catalog import Catalog, ModelRoute
from tts_client.gateway.encoding import (
    RESPONSE_FORMATS,
    UNSUPPORTED_FORMATS,
    AudioFormat,
    StreamEncoder,
    encode_whole,
)
from tts_client.gateway.errors import ApiError, ErrorBody, bad_request, from_client_error
from tts_client.gateway.settings import GatewaySettings
from tts_client.results import AudioChunk
from tts_client.settings import ClientSettings

log = logging.getLogger(__name__)

# Seconds the client waits past the job's deadline, so the broker's deadline_exceeded (clearer) comes first.
DEADLINE_MARGIN_S = 2.0
# One server-sent event, as an SSE parser hands it over: `data` holds the JSON event.
SSE_EVENT = {"type": "object", "required": ["data"], "properties": {
    "event": {"type": "string"},
    "data": {"type": "string", "description": 'JSON: {"type": "speech.audio.delta", "audio": BASE64}, then '
                                              '{"type": "speech.audio.done", "usage": {...}} or {"type": "error"}'}}}
ERROR_RESPONSES: dict[Union[int, str], dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Bad input: body, model, voice, format, speed or input length."},
    401: {"model": ErrorBody, "description": "Missing or unknown bearer token."},
    429: {"model": ErrorBody, "description": "Too many requests in progress, or the broker's queue is full."},
    502: {"model": ErrorBody, "description": "The job failed on the broker's side (poison job, internal)."},
    503: {"model": ErrorBody, "description": "The broker is not answering, or no worker serves the model."},
    504: {"model": ErrorBody, "description": "The speech was not ready within the request timeout."},
}


# Module level: FastAPI resolves the (string) annotations of dependencies through the module's globals.
BEARER = HTTPBearer(auto_error=False, description="One of the gateway's API keys (if it has any).")
Credentials = Annotated[Optional[HTTPAuthorizationCredentials], Depends(BEARER)]


class VoiceRef(BaseModel):
    """A voice given as an object, as OpenAI's custom voices are: `{"id": "..."}`."""

    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1, max_length=256)


class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "tts-broker"
    routing_key: Optional[str] = Field(description="The broker routing key it maps to (null: broker default).")
    workers: int = Field(description="Connected workers serving it now.")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]


class VoiceObject(BaseModel):
    id: str
    object: Literal["voice"] = "voice"
    speaker: str = Field(description="The engine speaker name it is sent as.")
    source: Literal["configured", "warm"] = Field(
        description="configured: from TTS_GATEWAY_VOICES; warm: a speaker some worker holds ready.")
    models: list[str] = Field(description="Models it can be used with.")


class VoiceList(BaseModel):
    object: Literal["list"] = "list"
    data: list[VoiceObject]


class Health(BaseModel):
    status: Literal["ok", "no_workers", "broker_unavailable"]
    broker_id: Optional[str] = None
    workers: int = 0
    models: dict[str, int] = Field(default_factory=dict, description="Workers serving each model.")


def speech_request_model(settings: GatewaySettings) -> type[BaseModel]:
    """The request body, with this gateway's models and input limit in its schema."""
    models = sorted(settings.models) or ["none"]
    formats = tuple(RESPONSE_FORMATS)
    example: Any = {"model": models[0], "input": "Hello from the gateway.", "voice": "alloy",
                    "response_format": "wav"}
    fields: dict[str, Any] = {
        "model": (Literal[tuple(models)], Field(description="A configured model name (see GET /v1/models).")),
        "input": (str, Field(min_length=1, max_length=settings.max_input_chars, pattern=r"\S",
                             description="Text to speak; not empty or only white space.")),
        "voice": (Union[str, VoiceRef], Field(description='A voice name (GET /v1/audio/voices) or {"id": name}.')),
        "response_format": (Literal[formats], Field(default="mp3", description="aac is not available.")),
        "speed": (float, Field(default=1.0, ge=0.25, le=4.0,
                               description="1.0 keeps the worker's pace; otherwise length_scale = 1/speed.")),
        "stream_format": (Literal["audio", "sse"], Field(
            default="audio", description="audio: the bytes; sse: speech.audio.delta events (base64).")),
        "instructions": (Optional[str], Field(default=None, max_length=4096,
                                              description="Accepted for compatibility; ignored.")),
    }
    model: type[BaseModel] = create_model(
        "SpeechRequest", __config__=ConfigDict(extra="ignore", json_schema_extra={"examples": [example]}), **fields)
    return model


class InFlight:
    """Counts speech requests in progress; beyond the limit a request is answered 429 at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0

    def acquire(self) -> None:
        if self.count >= self.limit:
            raise ApiError(429, f"too many requests in progress (limit {self.limit}); retry shortly",
                           type=errors.RATE_LIMIT, code="rate_limit_exceeded", headers={"Retry-After": "1"})
        self.count += 1

    def release(self) -> None:
        self.count -= 1


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


class Gateway:
    """Per-process state: settings, the broker client, the catalog, the limiter."""

    def __init__(self, settings: GatewaySettings, client_settings: ClientSettings) -> None:
        self.settings = settings
        self.client_settings = client_settings
        self.tokens = [t.encode("utf-8") for t in settings.tokens()]
        self.in_flight = InFlight(settings.max_concurrent_requests)
        self.client: Optional[AsyncTtsClient] = None
        self._catalog: Optional[Catalog] = None
        # Job ids: 64 random bits per process plus a counter (unique across gateways and restarts, and cheaper
        # than reading the OS's randomness once per request, which showed up in profiles).
        self._job_prefix = f"http-{secrets.token_hex(8)}-"
        self._job_seq = itertools.count()

    def next_job_id(self) -> str:
        return f"{self._job_prefix}{next(self._job_seq)}"

    @property
    def catalog(self) -> Catalog:
        assert self._catalog is not None, "the gateway's lifespan has not started"
        return self._catalog

    async def start(self) -> None:
        overrides: dict[str, Any] = {"timeout_s": self.settings.request_timeout_s + DEADLINE_MARGIN_S}
        if self.settings.broker:
            overrides["broker_url"] = self.settings.broker
        self.client = AsyncTtsClient(settings=self.client_settings.model_copy(update=overrides))
        self._catalog = Catalog(self.settings, self.client)
        log.info("gateway using broker %s; models %s; auth %s", self.client.url,
                 ", ".join(f"{k}->{v or '*'}" for k, v in self.settings.models.items()),
                 f"{len(self.tokens)} token(s)" if self.tokens else "off")

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.aclose()

    def check_token(self, credentials: Optional[HTTPAuthorizationCredentials]) -> None:
        if not self.tokens:
            return
        challenge = {"WWW-Authenticate": "Bearer"}
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise ApiError(401, "missing bearer token: send `Authorization: Bearer <key>`",
                           type=errors.AUTHENTICATION, code="invalid_api_key", headers=challenge)
        given = credentials.credentials.encode("utf-8")
        if not any(hmac.compare_digest(given, token) for token in self.tokens):
            raise ApiError(401, "invalid bearer token", type=errors.AUTHENTICATION, code="invalid_api_key",
                           headers=challenge)

    async def status_or_none(self) -> Any:
        try:
            return await self.catalog.status()
        except TtsClientError:
            return None

    async def require_worker(self, route: ModelRoute) -> None:
        if not self.settings.require_worker:
            return
        try:
            count = await self.catalog.workers_for(route)
        except TtsClientError as exc:
            raise from_client_error(exc) from exc
        if count == 0:
            raise ApiError(503, f"no worker serves model {route.name!r} (routing key {route.routing_key or '*'}) "
                                "right now", type=errors.SERVER, code="no_workers", headers={"Retry-After": "1"})


def create_app(settings: GatewaySettings, client_settings: Optional[ClientSettings] = None, *,
               on_ready: Optional[Callable[[], None]] = None) -> FastAPI:
    """The gateway app; its lifespan opens and closes the broker client (then calls on_ready)."""
    gateway = Gateway(settings, client_settings or ClientSettings())
    SpeechRequest: Any = speech_request_model(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        if on_ready is not None:
            on_ready()
        try:
            yield
        finally:
            await gateway.stop()

    app = FastAPI(title="tts-broker HTTP gateway", version="1",
                  description="OpenAI-compatible speech synthesis in front of a tts-broker.", lifespan=lifespan)
    app.state.gateway = gateway
    app.add_exception_handler(ApiError, errors.api_error_handler)
    app.add_exception_handler(TtsClientError, errors.client_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(StarletteHTTPException, errors.http_exception_handler)
    app.add_exception_handler(Exception, errors.unexpected_error_handler)
    async def authorized(credentials: Credentials) -> None:  # async: FastAPI runs sync ones in a thread
        gateway.check_token(credentials)

    async def create_speech(body: Any) -> Response:
        return await speak(gateway, body)

    # The body's model is built at run time, so its annotation is set here rather than written in the code.
    create_speech.__annotations__["body"] = SpeechRequest
    app.post("/v1/audio/speech", dependencies=[Depends(authorized)], responses={
        200: {"content": {f.media_type: {"schema": {"type": "string", "format": "binary"}}
                          for f in RESPONSE_FORMATS.values()} | {"text/event-stream": {"schema": SSE_EVENT}},
              "description": "The audio, or server-sent speech.audio.delta / speech.audio.done events."},
        **ERROR_RESPONSES}, response_class=Response, summary="Speak text")(create_speech)

    @app.get("/v1/models", dependencies=[Depends(authorized)], response_model=ModelList,
             responses={401: ERROR_RESPONSES[401]}, summary="Models and the routing keys they map to")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": gateway.catalog.models(await gateway.status_or_none())}

    @app.get("/v1/models/{model_id}", dependencies=[Depends(authorized)], response_model=ModelObject,
             responses={401: ERROR_RESPONSES[401], 404: {"model": ErrorBody, "description": "Unknown model."}},
             summary="One model")
    async def get_model(model_id: str) -> dict[str, Any]:
        for model in gateway.catalog.models(await gateway.status_or_none()):
            if model["id"] == model_id:
                return model
        raise ApiError(404, f"unknown model {model_id[:64]!r}", param="model_id", code="model_not_found")

    @app.get("/v1/audio/voices", dependencies=[Depends(authorized)], response_model=VoiceList,
             responses={401: ERROR_RESPONSES[401]}, summary="Configured voices and speakers workers hold warm")
    async def list_voices() -> dict[str, Any]:
        return {"object": "list", "data": gateway.catalog.voices(await gateway.status_or_none())}

    @app.get("/health", response_model=Health, responses={503: {"model": Health, "description": "Not ready."}},
             summary="200 when the broker answers and some worker is connected")
    async def health() -> JSONResponse:
        status = await gateway.status_or_none()
        if status is None:
            return JSONResponse(Health(status="broker_unavailable").model_dump(), status_code=503)
        models = {m["id"]: m["workers"] for m in gateway.catalog.models(status)}
        body = Health(status="ok" if status.workers else "no_workers", broker_id=status.broker_id,
                      workers=len(status.workers), models=models)
        return JSONResponse(body.model_dump(), status_code=200 if status.workers else 503)

    def openapi() -> dict[str, Any]:
        # FastAPI documents a 422 for every body; this gateway answers bad input 400, as OpenAI does.
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    operation.get("responses", {}).pop("422", None)
            for name in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


async def _validation_handler(request: Request, exc: Exception) -> JSONResponse:
    """Like errors.validation_error_handler, with clearer words for an unsupported format or unknown model."""
    for error in getattr(exc, "errors", lambda: [])():
        loc = [str(p) for p in error.get("loc", ())]
        value = error.get("input")
        if loc[-1:] == ["response_format"] and isinstance(value, str) and value in UNSUPPORTED_FORMATS:
            return bad_request(UNSUPPORTED_FORMATS[value], param="response_format",
                               code="unsupported_value").response()
        if loc[-1:] == ["input"] and error.get("type") in ("string_pattern_mismatch", "string_too_short"):
            return bad_request("input is empty or only white space", param="input").response()
        if loc[-1:] == ["input"] and error.get("type") == "string_too_long" and isinstance(value, str):
            limit = request.app.state.gateway.settings.max_input_chars
            return bad_request(f"input is {len(value)} characters; the limit is {limit}", param="input",
                               code="string_above_max_length").response()
        if loc == ["body"] and error.get("type") in ("model_attributes_type", "dict_type", "missing"):
            return bad_request("the request body must be a JSON object with model, input and voice "
                               "(Content-Type: application/json)").response()
        if loc[-1:] == ["model"] and isinstance(value, str):
            settings: GatewaySettings = request.app.state.gateway.settings
            known = ", ".join(sorted(settings.models)) or "none configured"
            return bad_request(f"unknown model {value[:64]!r}; this gateway serves: {known}", param="model",
                               code="model_not_found").response()
    return await errors.validation_error_handler(request, exc)


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
