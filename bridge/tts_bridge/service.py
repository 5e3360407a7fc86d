"""Run one bridge: signals, the Prometheus endpoint, the periodic status line, an orderly close."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any, Callable, Optional, Protocol

from prometheus_client import start_http_server

from tts_bridge.runner import JobRunner
from tts_bridge.settings import BridgeSettings
from tts_bridge.stats import BridgeStats

log = logging.getLogger(__name__)


class Bridge(Protocol):
    """What the three bridges offer: run until stop(), then aclose()."""

    name: str

    async def run(self) -> None: ...

    def stop(self) -> None: ...

    async def aclose(self) -> None: ...


def parse_listen(listen: str) -> tuple[str, int]:
    """HOST:PORT; ValueError with a clear message otherwise."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {listen!r}")
    return host, int(port)


async def serve(bridge: Bridge, runner: JobRunner, stats: BridgeStats, settings: BridgeSettings,
                *, report: Callable[[str], None], on_ready: Optional[Callable[[dict[str, Any]], None]] = None) -> None:
    """Run the bridge until SIGTERM/SIGINT; print a status line every status_interval_s through `report`."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, bridge.stop)
    info: dict[str, Any] = {"bridge": bridge.name}
    if settings.metrics_listen:
        host, port = parse_listen(settings.metrics_listen)
        server, _thread = start_http_server(port, host, registry=stats.registry)
        info["metrics"] = f"http://{host}:{server.server_port}/metrics"
    status: Optional[asyncio.Task[None]] = None
    if settings.status_interval_s > 0:
        status = asyncio.ensure_future(_status_lines(stats, settings.status_interval_s, report))
    if on_ready is not None:
        on_ready(info)
    try:
        await bridge.run()
    finally:
        if status is not None:
            status.cancel()
        await bridge.aclose()
        await runner.aclose()
        report(stats.status_line() + " (stopped)")


async def _status_lines(stats: BridgeStats, interval_s: float, report: Callable[[str], None]) -> None:
    while True:
        await asyncio.sleep(interval_s)
        report(stats.status_line())
