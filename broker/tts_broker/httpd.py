"""`tts-broker --http HOST:PORT`: /metrics, /api/status and the dashboard, served from their own thread.

The thread runs an aiohttp server on its own asyncio loop. It reads only the MetricsHook's latest Snapshot
(an immutable object the broker loop replaces about every half second) and prometheus-client's thread-safe
metric objects, so a slow or hostile HTTP client can never block or change the broker's state.

Nor can it take the broker's descriptors: connections beyond `max_connections` (at most a quarter of the
descriptor limit) are closed as soon as they are accepted, a connection that sends nothing for
`idle_timeout_s` (headers included) is closed, and accept() errors (EMFILE) are logged once a minute
(ThreadedHttp, the base a standby's server shares). /healthz answers 503 once the latest snapshot is older than
HEALTHZ_STALE_S: a broker whose loop is stuck must not look healthy.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import socket
import threading
import time
from importlib import resources
from typing import Any, Callable, Optional, Sequence

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tts_broker.fdlimit import nofile_soft
from tts_broker.metrics import MetricsHook
from tts_broker.throttle import LogThrottle

log = logging.getLogger(__name__)

#: /healthz answers 503 once the loop's latest snapshot (published every metrics.SNAPSHOT_EVERY_S) is this old:
#: a wedged loop must not look healthy, while a turn slowed by a large commit or a busy machine does.
HEALTHZ_STALE_S = 15.0
_STATIC = {"app.js": "text/javascript", "app.css": "text/css", "index.html": "text/html",
           "favicon.svg": "image/svg+xml"}


def parse_listen(value: str) -> tuple[str, int]:
    """HOST:PORT (port 0 picks a free one; [::1]:PORT for IPv6) as (host, port); ValueError if malformed."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


class ThreadedHttp:
    """An aiohttp server in a daemon thread of its own, behind a ConnectionGuard: start() returns once it listens.

    The base of the broker's HTTP server and of a standby's (standby_http.py): both get the connection cap (at
    most a quarter of the descriptor limit) and the idle timeout. A subclass gives the application (`application`) and
    what to log once it listens (`listening`).
    """

    thread_name = "tts-broker-http"

    def __init__(self, listen: str, *, max_connections: int = 256, idle_timeout_s: float = 15.0) -> None:
        self.guard = ConnectionGuard(min(max_connections, max(8, nofile_soft() // 4)), idle_timeout_s)
        self.host, self.port = parse_listen(listen)
        self.url = ""
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._stopped: Optional[asyncio.Event] = None
        self._ready = threading.Event()
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)

    def start(self, timeout_s: float = 10.0) -> str:
        """Bind and serve; returns the base URL (http://HOST:PORT/). Raises OSError if the port is taken."""
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise OSError(f"HTTP server did not start within {timeout_s:.0f}s")
        if self._error is not None:
            raise OSError(f"cannot listen on {self.host}:{self.port}: {self._error}") from self._error
        return self.url

    def stop(self, timeout_s: float = 5.0) -> None:
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None and self._thread.is_alive():
            loop.call_soon_threadsafe(stopped.set)
            self._thread.join(timeout_s)

    def application(self) -> web.Application:
        """The aiohttp application this server runs (routes, middlewares)."""
        raise NotImplementedError

    def listening(self) -> None:
        """Called in the thread once the socket listens and `url` is known (log lines)."""

    # ---- the thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by start(); the broker keeps running either way
            if not self._ready.is_set():
                self._error = exc
                self._ready.set()
            else:
                log.exception("HTTP server stopped")

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        runner = web.AppRunner(self.application(), access_log=None, handle_signals=False,
                               keepalive_timeout=self.guard.idle_timeout_s)
        await runner.setup()
        self._loop.set_exception_handler(self.guard.loop_exception)
        server: Optional[asyncio.AbstractServer] = None
        try:
            sock = _listening_socket(self.host, self.port)
            port = sock.getsockname()[1]
            handler_factory = runner.server
            assert handler_factory is not None
            server = await self._loop.create_server(lambda: GuardedProtocol(handler_factory(), self.guard),
                                                    sock=sock)
            host = f"[{self.host}]" if ":" in self.host else self.host
            self.url = f"http://{host}:{port}/"
            self.listening()
            log.info("HTTP: at most %d connections, %.0f s idle timeout", self.guard.max_connections,
                     self.guard.idle_timeout_s)
            self._ready.set()
            await self._stopped.wait()
        finally:
            if server is not None:
                server.close()
            await runner.cleanup()


class HttpServer(ThreadedHttp):
    """The HTTP side of the broker: dashboard, /metrics, /api/*, /healthz (see the module docstring)."""

    def __init__(self, metrics: MetricsHook, listen: str, *, tokens: Sequence[str] = (),
                 max_connections: int = 256, idle_timeout_s: float = 15.0, curve: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """`clock` (monotonic seconds) is what /healthz compares the snapshot's age with (tests pass their own)."""
        super().__init__(listen, max_connections=max_connections, idle_timeout_s=idle_timeout_s)
        self.metrics = metrics
        self.clock = clock
        # Under CURVE the views show what CURVE hides from non-admin keys (worker routing ids, hosts, pids,
        # every key's job ids): without tokens, the data endpoints are refused rather than served to anyone.
        self._closed = curve and not tokens
        # Bearer tokens for the data endpoints (/metrics, /api/*); none = open (bind it to loopback then).
        self._tokens = [t.encode("utf-8") for t in tokens]
        self._assets = {name: (resources.files("tts_broker") / "static" / name).read_bytes() for name in _STATIC}

    def application(self) -> web.Application:
        app = web.Application(middlewares=[self._auth] if self._tokens or self._closed else [])
        app.add_routes([
            web.get("/", self._index),
            web.get("/static/{name}", self._asset),
            web.get("/favicon.ico", self._favicon),  # browsers ask for it whatever the page links
            web.get("/metrics", self._metrics),
            web.get("/api/status", self._status),
            web.get("/api/dashboard", self._dashboard),
            web.get("/healthz", self._healthz),
        ])
        return app

    def listening(self) -> None:
        log.info("HTTP listening on %s (dashboard /, metrics /metrics, status /api/status)", self.url)
        if self._closed:
            log.warning("HTTP under CURVE without --http-token-file: /metrics and /api/* answer 403 (they "
                        "would show worker routing ids, hosts, pids and every key's job ids to anyone)")
        elif not self._tokens and not _loopback(self.host):
            log.warning("!!! SECURITY: --http %s is reachable from other hosts and has no --http-token-file: "
                        "anyone who reaches it reads job ids, worker hosts, pids and routing ids. Give it a "
                        "token file (docs/security.md). !!!", self.url)

    # ---- handlers --------------------------------------------------------------------------------

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """With tokens, /metrics and /api/* need `Authorization: Bearer TOKEN` (Prometheus' credentials) or
        `?token=TOKEN` (the dashboard page passes on its own query string). The page shell, its static assets
        and /healthz carry no data and stay open."""
        if self._closed and (request.path == "/metrics" or request.path.startswith("/api/")):
            return web.Response(status=403, text="CURVE is on: these views show worker and job details only with "
                                                 "a bearer token (--http-token-file)\n")
        if request.path == "/metrics" or request.path.startswith("/api/"):
            header = request.headers.get("Authorization", "")
            given = header[7:] if header[:7].lower() == "bearer " else request.query.get("token", "")
            if not any(hmac.compare_digest(given.encode("utf-8"), token) for token in self._tokens):
                return web.Response(status=401, text="a bearer token is needed (--http-token-file)\n",
                                    headers={"WWW-Authenticate": "Bearer"})
        response: web.StreamResponse = await handler(request)
        return response

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(body=self._assets["index.html"], content_type="text/html", charset="utf-8")

    async def _asset(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _STATIC or name == "index.html":
            raise web.HTTPNotFound(text=f"no asset {name}")
        return web.Response(body=self._assets[name], content_type=_STATIC[name], charset="utf-8",
                            headers={"Cache-Control": "no-cache"})

    async def _favicon(self, request: web.Request) -> web.Response:
        return web.Response(body=self._assets["favicon.svg"], content_type="image/svg+xml",
                            headers={"Cache-Control": "max-age=86400"})

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _status(self, request: web.Request) -> web.Response:
        snap = self.metrics.snapshot
        if not snap.status:
            return _json({"error": "starting: no status yet"}, status=503)
        return _json(snap.status)

    async def _dashboard(self, request: web.Request) -> web.Response:
        return _json(self.metrics.snapshot.page())

    async def _healthz(self, request: web.Request) -> web.Response:
        """200 while the broker loop publishes its snapshot; 503 once the last one is HEALTHZ_STALE_S old."""
        age_s = self.clock() - self.metrics.snapshot.taken_monotonic
        if age_s > HEALTHZ_STALE_S:
            return web.Response(status=503, text=f"stale: the broker loop published no state for {age_s:.0f} s\n",
                                headers={"Cache-Control": "no-store"})
        return web.Response(text="ok\n", headers={"Cache-Control": "no-store"})


class ConnectionGuard:
    """Counts the HTTP connections, refuses those past the cap, and rate-limits the loop's accept errors."""

    def __init__(self, max_connections: int, idle_timeout_s: float) -> None:
        self.max_connections = max_connections
        self.idle_timeout_s = idle_timeout_s
        self.open = 0
        self.refused = 0
        self.timed_out = 0
        self._refusals = LogThrottle(log, interval_s=60.0)
        self._accept_errors = LogThrottle(log, interval_s=60.0)

    def admit(self) -> bool:
        if self.open >= self.max_connections:
            self.refused += 1
            self._refusals.warning("HTTP: %d connections open, the cap: new ones closed at once (%d so far)",
                                   self.open, self.refused)
            return False
        self.open += 1
        return True

    def loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """The loop's handler: accept() failures (out of descriptors) one line a minute, no traceback."""
        exc = context.get("exception")
        if isinstance(exc, OSError) and "accept" in str(context.get("message", "")):
            self._accept_errors.error("HTTP accept() fails: %s (the descriptor limit? `tts status --json`, "
                                      "jobs.nofile)", exc)
            return
        loop.default_exception_handler(context)


class GuardedProtocol(asyncio.Protocol):
    """aiohttp's protocol for one connection, closed past the cap or after idle_timeout_s without a byte."""

    def __init__(self, inner: Any, guard: ConnectionGuard) -> None:
        self.inner = inner
        self.guard = guard
        self.admitted = False
        self.transport: Optional[asyncio.Transport] = None
        self._timer: Optional[asyncio.TimerHandle] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if not self.guard.admit():
            transport.abort()
            return
        self.admitted = True
        self._arm()
        self.inner.connection_made(transport)

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(self.guard.idle_timeout_s, self._expire)

    def _expire(self) -> None:
        self.guard.timed_out += 1
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        self._arm()
        self.inner.data_received(data)

    def eof_received(self) -> Optional[bool]:
        result: Optional[bool] = self.inner.eof_received()
        return result

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self._arm()  # a slow reader of a large answer is not idle
        self.inner.resume_writing()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.admitted:
            self.guard.open -= 1
            self.inner.connection_lost(exc)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _listening_socket(host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket (bound here so port 0's choice is known before serving)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data), status=status, content_type="application/json",
                        headers={"Cache-Control": "no-store"})
