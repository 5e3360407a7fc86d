"""The broker's two HTTP servers on real loopback sockets: the standby's guard, /healthz on a stale snapshot.

Both are a ThreadedHttp (httpd.py): the standby's /healthz has the connection cap and idle timeout the active
broker's has. The active broker's /healthz is 503 once the loop's snapshot is HEALTHZ_STALE_S old; its clock is
injected, so no test waits that long.
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from typing import Iterator
from urllib.parse import urlparse

import pytest

from tts_broker.core import BrokerCore
from tts_broker.httpd import HEALTHZ_STALE_S, HttpServer
from tts_broker.metrics import MetricsHook
from tts_broker.settings import BrokerSettings
from tts_broker.standby_http import StandbyHttp

from harness import wait_for

pytestmark = pytest.mark.timeout(30)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def closed_by_peer(sock: socket.socket) -> bool:
    """True once the server closed or reset this connection (it sent nothing else)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


@pytest.fixture
def standby() -> Iterator[StandbyHttp]:
    server = StandbyHttp("127.0.0.1:0", lambda: {"role": "standby"}, max_connections=2, idle_timeout_s=0.5)
    assert server.start()
    yield server
    server.stop()


def test_the_standby_caps_connections_and_closes_idle_ones(standby: StandbyHttp) -> None:
    url = urlparse(standby.url)
    address = (url.hostname or "", url.port or 0)
    held = [socket.create_connection(address, timeout=5) for _ in range(2)]
    extra = socket.create_connection(address, timeout=5)
    try:
        wait_for(lambda: standby.guard.open == 2 and standby.guard.refused == 1, 5, what="two admitted, one refused")
        assert closed_by_peer(extra)  # past the cap: closed as soon as it was accepted
        assert all(closed_by_peer(sock) for sock in held)  # silent for idle_timeout_s (0.5 s): closed
        assert standby.guard.timed_out == 2
        wait_for(lambda: standby.guard.open == 0, 5, what="the closed connections counted out")
    finally:
        for sock in (*held, extra):
            sock.close()
    assert get(standby.url + "healthz") == (503, "standby\n")


def test_healthz_is_503_once_the_loop_s_snapshot_is_stale() -> None:
    core = BrokerCore(BrokerSettings(_env_file=None))  # type: ignore[call-arg]
    metrics = MetricsHook()
    metrics.attach(core, core.info)
    metrics.tick(0.0)  # what the broker loop does every turn: a snapshot, stamped with the monotonic time
    ahead_s = [0.0]
    server = HttpServer(metrics, "127.0.0.1:0", clock=lambda: time.monotonic() + ahead_s[0])
    url = server.start()
    try:
        assert get(url + "healthz") == (200, "ok\n")
        ahead_s[0] = HEALTHZ_STALE_S - 1  # a slow turn is still healthy
        assert get(url + "healthz")[0] == 200
        ahead_s[0] = HEALTHZ_STALE_S + 1  # the loop published nothing for longer: wedged
        status, text = get(url + "healthz")
        assert status == 503 and text.startswith("stale: the broker loop published no state for 1")
    finally:
        server.stop()
