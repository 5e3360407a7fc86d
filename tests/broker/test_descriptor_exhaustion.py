"""Attack (issue 19, item 12): idle TCP connections to `--http` exhaust the broker's descriptors.

With a 1,024-descriptor limit, 1,100 idle connections left ZeroMQ no descriptor to accept clients and workers,
and asyncio logged a traceback per failed accept(). Here the broker runs under a 256-descriptor limit
(prlimit) and gets 400 idle connections: its HTTP side keeps at most a quarter of the limit and closes the
rest, silent connections time out, ZeroMQ clients and workers still connect, and the log stays small.
"""

from __future__ import annotations

import shutil
import socket
import urllib.request
from typing import Any, Callable
from urllib.parse import urlparse

import pytest

from tests.conftest import BrokerProc, wait_for
from tests.peers import RawWorker
from tts_client import TtsClient

pytestmark = pytest.mark.timeout(90)

LIMIT = 256


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="prlimit (util-linux) is not installed")
def test_idle_http_connections_leave_zeromq_peers_room(broker_factory: Callable[..., BrokerProc], ctx: Any) -> None:
    broker = broker_factory("--http", "127.0.0.1:0", "--http-idle-timeout-s", "3", "--log-level", "INFO",
                            start=False)
    broker.wrapper = ["prlimit", f"--nofile={LIMIT}:{LIMIT}", "--"]
    broker.start()
    assert broker.http is not None
    url = urlparse(broker.http)
    idle: list[socket.socket] = []
    try:
        for _ in range(400):
            try:
                idle.append(socket.create_connection((url.hostname, url.port), timeout=5))
            except OSError:
                pass  # the listen backlog may be full: the broker did not accept it; nothing leaks either way
        with TtsClient(broker.frontend, request_timeout_s=10) as client:
            assert client.ping().broker_id
            worker = RawWorker(ctx, broker.backend, name="still-welcome")
            wait_for(lambda: client.broker_status().worker_count == 1, 20, what="a worker registered")
            nofile = client.broker_status().jobs["nofile"]
            assert nofile["soft"] == LIMIT and nofile["open"] < LIMIT - 32, nofile
            worker.close()
    finally:
        for sock in idle:
            sock.close()
    # The silent ones were cut after 3 s; the HTTP side answers again.
    wait_for(lambda: _healthz(broker.http or ""), 30, interval_s=0.5, what="/healthz answering again")
    log = broker.log()
    assert len(log) < 20_000, f"{len(log)} bytes of log"
    assert "Traceback" not in log
    assert f"descriptor limit {LIMIT}" in log and "connections open, the cap" in log


def _healthz(base: str) -> bool:
    try:
        with urllib.request.urlopen(base + "healthz", timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False
