"""`--http` while a broker stands by: /healthz answers 503 and /api/status says `"role": "standby"`.

A Kubernetes readiness probe or a load balancer health check on /healthz thus routes to the active broker
only. The server runs in its own thread for as long as the broker waits for leadership; once it leads, this
server stops and the broker's own HTTP server (httpd.py, /healthz 200) binds the same address.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import Any, Callable, Optional

from aiohttp import web

from tts_broker.httpd import _listening_socket, parse_listen

log = logging.getLogger(__name__)


class StandbyHttp:
    """A minimal HTTP server for a standby broker: health and role only."""

    def __init__(self, listen: str, describe: Callable[[], dict[str, Any]]) -> None:
        self.host, self.port = parse_listen(listen)
        self.describe = describe
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._stopped: Optional[asyncio.Event] = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tts-broker-standby-http", daemon=True)
        self.url = ""

    def start(self, timeout_s: float = 10.0) -> None:
        self._thread.start()
        self._ready.wait(timeout_s)

    def stop(self, timeout_s: float = 5.0) -> None:
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None and self._thread.is_alive():
            loop.call_soon_threadsafe(stopped.set)
            self._thread.join(timeout_s)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except Exception as exc:  # a standby without its health endpoint still stands by
            log.warning("standby HTTP server on %s:%d not available: %s", self.host, self.port, exc)
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        app = web.Application()
        app.add_routes([web.get("/healthz", self._healthz), web.get("/api/status", self._status)])
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            sock = _listening_socket(self.host, self.port)
            await web.SockSite(runner, sock).start()
            self.url = f"http://{self.host}:{sock.getsockname()[1]}/"
            log.info("standby: HTTP on %s (/healthz 503 until this broker is active)", self.url)
            self._ready.set()
            await self._stopped.wait()
        finally:
            await runner.cleanup()

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(status=503, text="standby\n")

    async def _status(self, request: web.Request) -> web.Response:
        return web.Response(status=503, text=json.dumps(self.describe()), content_type="application/json",
                            headers={"Cache-Control": "no-store"})
