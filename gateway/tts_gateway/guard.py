"""The gateway's front door, before FastAPI reads a byte of the body: API key first, then the body's size.

FastAPI reads and parses a request's whole body before it runs the endpoint's dependencies, so the bearer
check (a dependency) came after the body was in memory: one unauthenticated 400 MB POST took the gateway
from 66 MB to 1,255 MB. This ASGI middleware answers 401 for a missing or unknown key from the headers
alone, 413 for a `Content-Length` over `max_body_bytes`, and for a chunked body (no length) stops reading
with 413 as soon as the bytes received pass the limit. Either way at most `max_body_bytes` are ever held.
"""

from __future__ import annotations

import logging
from typing import Callable, Optional

from fastapi import HTTPException
from fastapi.security import HTTPAuthorizationCredentials
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tts_gateway.errors import INVALID_REQUEST, ApiError

log = logging.getLogger(__name__)

#: Paths that need the API key (the same ones as the endpoints' `authorized` dependency).
PROTECTED_PREFIX = "/v1/"


def too_large(limit: int) -> ApiError:
    return ApiError(413, f"the request body is larger than this gateway accepts ({limit} bytes)",
                    type=INVALID_REQUEST, code="body_too_large", headers={"Connection": "close"})


def credentials_of(header: Optional[bytes]) -> Optional[HTTPAuthorizationCredentials]:
    """The Authorization header as FastAPI's HTTPBearer would hand it over (None when absent or odd)."""
    if not header:
        return None
    scheme, _, value = header.decode("latin-1").partition(" ")
    if not scheme or not value.strip():
        return None
    return HTTPAuthorizationCredentials(scheme=scheme, credentials=value.strip())


class RequestGuard:
    """ASGI middleware: the key from the headers, and the body cut at `max_body_bytes`."""

    def __init__(self, app: ASGIApp, *, check_token: Callable[[Optional[HTTPAuthorizationCredentials]], None],
                 max_body_bytes: int) -> None:
        self.app = app
        self.check_token = check_token
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if str(scope.get("path", "")).startswith(PROTECTED_PREFIX):
            try:
                self.check_token(credentials_of(headers.get(b"authorization")))
            except ApiError as exc:
                exc.headers = {**(exc.headers or {}), "Connection": "close"}  # its body stays unread
                await exc.response()(scope, receive, send)
                return
        length = headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await ApiError(400, "Content-Length is not a number", code="invalid_header",
                               headers={"Connection": "close"}).response()(scope, receive, send)
                return
            if declared > self.max_body_bytes:
                log.info("refused a %d-byte body (limit %d) without reading it", declared, self.max_body_bytes)
                await too_large(self.max_body_bytes).response()(scope, receive, send)
                return
        await self.app(scope, self._counting(receive), send)

    def _counting(self, receive: Receive) -> Receive:
        """`receive`, failing with 413 once the body passes the limit (a chunked body has no length)."""
        seen = 0
        limit = self.max_body_bytes

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    log.info("refused a chunked body past %d bytes", limit)
                    # fastapi's HTTPException: FastAPI's body reader re-raises it as is (others become 400).
                    raise HTTPException(413, too_large(limit).message, headers={"Connection": "close"})
            return message

        return counted
