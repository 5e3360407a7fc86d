"""Attack (issue 19, item 13): large bodies at the gateway, with and without an API key.

The gateway read whole bodies before it checked the key: one unauthenticated 400 MB POST grew it by
1.2 GB. A real gateway process gets a 64 MiB body streamed at it (chunked, and with a Content-Length it
never sends in full); its RSS must not grow by more than a few MiB, and the answers are 401 and 413.
"""

from __future__ import annotations

import json
import socket
from typing import Callable

import psutil
import pytest

from gatewaykit import API_KEY, GatewayProc
from harness import BrokerProc

pytestmark = pytest.mark.timeout(120)

BODY_MB = 64
CHUNK = b"x" * (1 << 20)


def post(gateway: GatewayProc, headers: dict[str, str], *, chunked: bool) -> tuple[int, dict[str, object]]:
    """POST /v1/audio/speech with a BODY_MB body, sending until the gateway answers or stops reading."""
    host, port = gateway.url.removeprefix("http://").split(":")
    lines = ["POST /v1/audio/speech HTTP/1.1", f"Host: {host}", "Content-Type: application/json"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {BODY_MB << 20}")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        sock.settimeout(0.0)
        answer = b""
        try:
            for _ in range(BODY_MB):
                try:
                    answer += sock.recv(65536)
                except BlockingIOError:
                    pass
                if answer:
                    break
                sock.settimeout(30)
                sock.sendall(b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK) if chunked else CHUNK)
                sock.settimeout(0.0)
            else:
                if chunked:
                    sock.settimeout(30)
                    sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the gateway answered and closed while we were still sending
        sock.settimeout(30)
        while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < 10:
            try:
                more = sock.recv(65536)
            except ConnectionResetError:
                break
            if not more:
                break
            answer += more
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"chunked" in head.lower():
        body = body.split(b"\r\n", 1)[1].rsplit(b"\r\n0\r\n", 1)[0]
    return status, json.loads(body.decode() or "{}")


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_large_bodies_are_refused_before_they_are_read(broker: BrokerProc, chunked: bool,
                                                       gateway_factory: Callable[..., GatewayProc]) -> None:
    gateway = gateway_factory(broker, MODELS="tts-1=tone", REQUIRE_WORKER="false")
    process = psutil.Process(gateway.proc.popen.pid)
    before = process.memory_info().rss
    status, body = post(gateway, {}, chunked=chunked)
    assert status == 401 and body["error"]["code"] == "invalid_api_key"  # type: ignore[index]
    status, body = post(gateway, {"Authorization": "Bearer not-the-key"}, chunked=chunked)
    assert status == 401
    status, body = post(gateway, {"Authorization": f"Bearer {API_KEY}"}, chunked=chunked)
    assert status == 413 and body["error"]["code"] == "body_too_large", body  # type: ignore[index]
    grown_mb = (process.memory_info().rss - before) / 2**20
    assert grown_mb < 16, f"the gateway grew by {grown_mb:.0f} MiB for {BODY_MB} MiB bodies"
    assert process.is_running() and gateway.proc.alive()


def test_a_connection_that_sends_no_request_is_closed(broker: BrokerProc,
                                                      gateway_factory: Callable[..., GatewayProc]) -> None:
    """Item 12 for the gateway: silent connections no longer hold a descriptor for ever (idle timeout 1 s)."""
    gateway = gateway_factory(broker, MODELS="tts-1=tone", REQUIRE_WORKER="false", IDLE_TIMEOUT_S="1")
    host, port = gateway.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as silent, \
            socket.create_connection((host, int(port)), timeout=20) as slow:
        slow.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # headers begun, never finished
        assert silent.recv(1) == b""  # closed by the gateway well within the 20 s socket timeout
        assert slow.recv(1) == b""
