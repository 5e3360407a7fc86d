"""The gateway's per-process state: settings, the broker client, the catalog, the in-flight limiter."""

from __future__ import annotations

import hmac
import itertools
import logging
import secrets
from typing import Any, Optional

from fastapi.security import HTTPAuthorizationCredentials

from tts_client.aio import AsyncTtsClient
from tts_client.errors import TtsClientError
from tts_client.settings import ClientSettings
from tts_gateway import errors
from tts_gateway.catalog import Catalog, ModelRoute
from tts_gateway.errors import ApiError, from_client_error
from tts_gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

# Seconds the client waits past the job's deadline, so the broker's deadline_exceeded (clearer) comes first.
DEADLINE_MARGIN_S = 2.0


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
