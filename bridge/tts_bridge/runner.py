"""What every bridge does with a job: submit it to the broker, write its audio, describe the result."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import Any, Callable, Optional

from tts_bridge.errors import JobDeferred, JobRejected, MalformedJob
from tts_bridge.message import JobMessage
from tts_bridge.settings import BridgeSettings
from tts_bridge.stats import BridgeStats
from tts_client.aio import AsyncTtsClient
from tts_client.audio import check_writable_dir, save_line
from tts_client.errors import ClientTimeout, InvalidRequest, JobFailed, TtsClientError
from tts_client.jobspec import JobOptions
from tts_client.settings import ClientSettings

log = logging.getLogger(__name__)

_ROUTES_TTL_S = 2.0
_MAX_TENANTS = 256


class JobRunner:
    """Runs JobMessages through the broker: one client per tenant (fairness), models checked, audio saved."""

    def __init__(self, client_settings: ClientSettings, settings: BridgeSettings, stats: BridgeStats) -> None:
        self.client_settings = client_settings.model_copy(update={"timeout_s": 0.0})  # the queue holds the job
        self.settings = settings
        self.stats = stats
        self.output_dir = check_writable_dir(settings.output_dir)
        self._clients: dict[Optional[str], AsyncTtsClient] = {}
        self._routes: Optional[set[str]] = None
        self._routes_at = 0.0
        self._free_slots = 0
        self.client()  # a broker URL that cannot work fails here, before any message is taken

    def client(self, tenant: Optional[str] = None) -> AsyncTtsClient:
        """The broker client for a tenant (one socket each, so the broker's fairness splits by tenant)."""
        if tenant not in self._clients and len(self._clients) >= _MAX_TENANTS:
            tenant = None  # past the cap, the rest share the default client
        client = self._clients.get(tenant)
        if client is None:
            client = AsyncTtsClient(settings=self.client_settings)
            self._clients[tenant] = client
        return client

    async def free_capacity(self) -> int:
        """Free worker slots in the fleet (capacity - busy), from the broker's status (cached briefly)."""
        await self._refresh_routes()
        return self._free_slots

    async def check_model(self, model: Optional[str]) -> None:
        """MalformedJob when workers are connected and none serves the model (a message's unknown model)."""
        if not model:
            return
        await self._refresh_routes()
        routes = self._routes
        if routes and model not in routes:
            raise MalformedJob(f"unknown model {model!r}; connected workers serve {', '.join(sorted(routes))}")

    async def _refresh_routes(self) -> None:
        now = time.monotonic()
        if now - self._routes_at < _ROUTES_TTL_S:
            return
        self._routes_at = now
        try:
            status = await self.client().broker_status(timeout_s=2.0)
        except TtsClientError as exc:
            log.debug("broker status unavailable: %s", exc)
            return
        routes: set[str] = set()
        free = 0
        for w in status.workers:
            routes.add(w.engine)
            if w.model:
                routes.add(f"{w.engine}:{w.model}")
            free += max(0, w.capacity - w.busy)
        self._routes = routes
        self._free_slots = free

    async def run(self, job: JobMessage, on_accepted: Callable[[], None]) -> dict[str, Any]:
        """Synthesise the job and save its audio: {path, sha256, duration_ms, sample_rate, cached}.

        Raises MalformedJob or JobRejected (never worth retrying) or JobDeferred (try again later).
        """
        await self.check_model(job.model)
        options = JobOptions(job_id=job.job_id, speaker=job.speaker, model=job.model, voice=job.voice or None)
        try:
            result = await self.client(job.tenant).submit_acked(job.text, on_accepted=on_accepted, options=options)
        except InvalidRequest as exc:
            raise MalformedJob(str(exc)) from exc
        except JobFailed as exc:
            if exc.retryable:
                raise JobDeferred(str(exc)) from exc
            raise JobRejected(exc.code, exc.message) from exc
        except (ClientTimeout, TtsClientError) as exc:
            raise JobDeferred(str(exc)) from exc
        path = await asyncio.to_thread(save_line, result, self.output_dir, job.stream_index, job.line_id, "wav")
        digest = await asyncio.to_thread(lambda: hashlib.sha256(path.read_bytes()).hexdigest())
        return {"path": str(path.resolve()), "sha256": digest, "duration_ms": round(result.duration_s * 1000),
                "sample_rate": result.sample_rate, "cached": bool(result.meta.cached)}

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()
