"""`--http` while a broker stands by: /healthz answers 503 and /api/status says `"role": "standby"`.

A Kubernetes readiness probe or a load balancer health check on /healthz thus routes to the active broker
only. The server runs in its own thread for as long as the broker waits for leadership; once it leads, this
server stops and the broker's own HTTP server (httpd.py, /healthz 200) binds the same address. Both are a
ThreadedHttp, so the standby's has the same connection cap and idle timeout.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable

from aiohttp import web

from tts_broker.httpd import ThreadedHttp

log = logging.getLogger(__name__)


class StandbyHttp(ThreadedHttp):
    """A minimal HTTP server for a standby broker: health and role only."""

    thread_name = "tts-broker-standby-http"

    def __init__(self, listen: str, describe: Callable[[], dict[str, Any]], *, max_connections: int = 256,
                 idle_timeout_s: float = 15.0) -> None:
        super().__init__(listen, max_connections=max_connections, idle_timeout_s=idle_timeout_s)
        self.describe = describe

    def start(self, timeout_s: float = 10.0) -> str:
        """Serve; a standby without its health endpoint still stands by (logged; returns "")."""
        try:
            return super().start(timeout_s)
        except OSError as exc:
            log.warning("standby HTTP server on %s:%d not available: %s", self.host, self.port, exc)
            return ""

    def application(self) -> web.Application:
        app = web.Application()
        app.add_routes([web.get("/healthz", self._healthz), web.get("/api/status", self._status)])
        return app

    def listening(self) -> None:
        log.info("standby: HTTP on %s (/healthz 503 until this broker is active)", self.url)

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(status=503, text="standby\n")

    async def _status(self, request: web.Request) -> web.Response:
        return web.Response(status=503, text=json.dumps(self.describe()), content_type="application/json",
                            headers={"Cache-Control": "no-store"})
