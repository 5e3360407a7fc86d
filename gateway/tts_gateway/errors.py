"""HTTP errors in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, and what maps to them."""

from __future__ import annotations

import logging
from typing import Any, Optional

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse

from tts_protocol import ErrorCode

from tts_client.errors import BrokerUnavailable, ClientTimeout, InvalidRequest, RemoteError, TtsClientError

log = logging.getLogger(__name__)

INVALID_REQUEST = "invalid_request_error"
AUTHENTICATION = "authentication_error"
RATE_LIMIT = "rate_limit_error"
SERVER = "server_error"
TIMEOUT = "timeout_error"

# Broker error code -> (HTTP status, OpenAI error type).
_REMOTE: dict[str, tuple[int, str]] = {
    ErrorCode.BAD_REQUEST.value: (400, INVALID_REQUEST),
    ErrorCode.PROTOCOL.value: (400, INVALID_REQUEST),
    ErrorCode.ENGINE_ERROR.value: (400, INVALID_REQUEST),  # the engine rejected it: unknown speaker, settings
    ErrorCode.QUEUE_FULL.value: (429, RATE_LIMIT),
    ErrorCode.NO_WORKERS.value: (503, SERVER),
    ErrorCode.SHUTTING_DOWN.value: (503, SERVER),
    ErrorCode.DEADLINE_EXCEEDED.value: (504, TIMEOUT),
    ErrorCode.CANCELLED.value: (503, SERVER),  # someone cancelled it on the broker; not this caller's doing
    ErrorCode.MAX_ATTEMPTS.value: (502, SERVER),  # it killed every worker it touched
    ErrorCode.NOT_FOUND.value: (502, SERVER),
    ErrorCode.INTERNAL.value: (502, SERVER),
    ErrorCode.OUT_OF_RANGE.value: (400, INVALID_REQUEST),
    ErrorCode.TOO_LARGE.value: (413, INVALID_REQUEST),
    ErrorCode.CONFLICT.value: (409, INVALID_REQUEST),  # the job id is taken by a job with another request
    ErrorCode.TOO_MANY_JOBS.value: (429, RATE_LIMIT),
}


class ErrorDetail(BaseModel):
    """OpenAI's error object."""

    message: str
    type: str
    param: Optional[str] = None
    code: Optional[str] = None


class ErrorBody(BaseModel):
    """What every non-2xx answer carries."""

    error: ErrorDetail


class ApiError(Exception):
    """An HTTP error answer; raise it anywhere in a handler."""

    def __init__(self, status: int, message: str, *, type: str = INVALID_REQUEST, param: Optional[str] = None,
                 code: Optional[str] = None, headers: Optional[dict[str, str]] = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers

    def response(self) -> JSONResponse:
        body = ErrorBody(error=ErrorDetail(message=self.message, type=self.type, param=self.param, code=self.code))
        return JSONResponse(body.model_dump(), status_code=self.status, headers=self.headers)


def bad_request(message: str, *, param: Optional[str] = None, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


def from_client_error(exc: TtsClientError) -> ApiError:
    """The answer for an error the broker client raised."""
    if isinstance(exc, BrokerUnavailable):
        return ApiError(503, f"the broker is not answering: {exc}", type=SERVER, code="broker_unavailable")
    if isinstance(exc, ClientTimeout):
        return ApiError(504, f"the speech was not ready in time: {exc}", type=TIMEOUT, code="timeout")
    if isinstance(exc, RemoteError):
        status, kind = _REMOTE.get(exc.code, (502, SERVER))
        return ApiError(status, exc.message or exc.code, type=kind, code=exc.code)
    if isinstance(exc, InvalidRequest):
        return bad_request(str(exc))
    return ApiError(502, str(exc), type=SERVER, code="client_error")


async def api_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return exc.response()


async def client_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TtsClientError)
    return from_client_error(exc).response()


async def http_exception_handler(_request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own HTTP errors (404 unknown path, 405 wrong method) in OpenAI's shape."""
    status = int(getattr(exc, "status_code", 500))
    detail = getattr(exc, "detail", None) or "error"
    code = {404: "not_found", 405: "method_not_allowed"}.get(status)
    return ApiError(status, str(detail), type=INVALID_REQUEST if status < 500 else SERVER, code=code,
                    headers=getattr(exc, "headers", None)).response()


def _describe(error: dict[str, Any]) -> tuple[str, Optional[str]]:
    location = [str(part) for part in error.get("loc", ()) if part != "body"]
    param = location[0] if location else None
    where = ".".join(location)
    message = str(error.get("msg", "invalid value"))
    if error.get("type") == "json_invalid":
        return f"the request body is not valid JSON: {message}", None
    return (f"{where}: {message}" if where else message), param


async def validation_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    """A body FastAPI could not parse or validate -> 400 (OpenAI answers 400 where FastAPI would say 422)."""
    errors = list(getattr(exc, "errors", lambda: [])())
    message, param = _describe(errors[0]) if errors else ("invalid request", None)
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return bad_request(message, param=param).response()


async def unexpected_error_handler(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error serving %s %s", request.method, request.url.path)
    return ApiError(500, "internal gateway error", type=SERVER, code="internal").response()
