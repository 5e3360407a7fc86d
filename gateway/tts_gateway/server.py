"""Run the gateway app on uvicorn: bind HOST:PORT ourselves (port 0 works), say where, serve until SIGTERM."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
from pathlib import Path
from typing import Callable, Optional

from tts_client.settings import ClientSettings
from tts_gateway.settings import GatewaySettings

log = logging.getLogger(__name__)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket; IPv6 when the host is an IPv6 address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=2048, reuse_port=False)


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def write_ready_file(path: Path, url: str) -> None:
    """Atomically, so a reader never sees half of it."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"url": url, "pid": os.getpid()}), encoding="utf-8")
    os.replace(tmp, path)


def serve(settings: GatewaySettings, client_settings: Optional[ClientSettings] = None,
          sock: Optional[socket.socket] = None, on_listening: Callable[[str], None] = lambda _url: None) -> None:
    """Serve the gateway in the foreground; SIGINT/SIGTERM finish in-flight requests, then stop."""
    import uvicorn

    from tts_gateway.app import create_app

    if sock is None:
        sock = bind(*settings.host_port())
    url = url_of(sock)
    ready_file = settings.ready_file

    def announce() -> None:
        log.info("gateway listening on %s", url)
        if ready_file is not None:
            write_ready_file(ready_file, url)
        on_listening(url)

    app = create_app(settings, client_settings, on_ready=announce)

    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on",
                            timeout_graceful_shutdown=int(settings.graceful_shutdown_s) or None,
                            server_header=False)
    # uvicorn re-raises the stop signal once it has shut down, to the handler it found installed; a no-op one
    # makes SIGTERM/SIGINT a clean stop (exit 0) instead of death by signal (143) after the graceful shutdown.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda _signum, _frame: None)
    uvicorn.Server(config).run(sockets=[sock])
