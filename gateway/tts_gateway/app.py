"""The gateway's ASGI app (FastAPI): OpenAI's `POST /v1/audio/speech` and friends, in front of the broker.

It is a client of the broker like any other (one AsyncTtsClient for the whole process). A request is
checked (auth, limits, body), routed (model -> routing key, voice -> speaker, speed -> length_scale), and
answered with audio: pcm and wav stream chunk by chunk as the broker hands them over, the other formats are
encoded when the job is done. The status line waits for the first audio chunk, so an error before any audio
still gets its proper code; one after it aborts the connection (a truncated body the client notices).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Annotated, Any, AsyncIterator, Callable, Optional, Union

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from tts_client.errors import TtsClientError
from tts_client.settings import ClientSettings
from tts_gateway import errors
from tts_gateway.encoding import (
    RESPONSE_FORMATS,
    UNSUPPORTED_FORMATS,
)
from tts_gateway.errors import ApiError, ErrorBody, bad_request
from tts_gateway.schema import Health, ModelList, ModelObject, VoiceList, speech_request_model
from tts_gateway.settings import GatewaySettings
from tts_gateway.speech import speak
from tts_gateway.state import Gateway

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


