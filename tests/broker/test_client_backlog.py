"""ClientBacklog in-process: per-client byte budget, oldest dropped first, order kept, gone clients forgotten."""

from __future__ import annotations

from typing import Any

import pytest
import zmq

from tts_protocol.constants import Command

from tts_broker.backlog import ClientBacklog

pytestmark = pytest.mark.unit


class Port:
    """Stands in for RouterPort.send: takes `room` messages, then EAGAIN (or EHOSTUNREACH once gone)."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.gone = False
        self.sent: list[tuple[bytes, Any]] = []
        self.last_errno = 0

    def send(self, identity: bytes, command: Command, body: Any, payload: Any) -> bool:
        if self.gone or self.room == 0:
            self.last_errno = zmq.EHOSTUNREACH if self.gone else zmq.EAGAIN
            return False
        self.room -= 1
        self.sent.append((identity, payload))
        return True


def test_the_budget_drops_the_oldest_replies_of_that_client_only() -> None:
    backlog = ClientBacklog(max_bytes=3000)
    for i in range(5):
        backlog.hold(b"slow", Command.RESULT, b"x" * 10, bytes([i]) * 990)  # 1000 bytes each
    backlog.hold(b"other", Command.RESULT, b"x" * 10, b"y" * 990)
    counts = backlog.counts()
    assert counts["dropped"] == 2 and counts["dropped_bytes"] == 2000
    assert counts["bytes"] == 4000 and counts["clients"] == 2
    port = Port(room=10)
    backlog.flush(port.send, lambda: port.last_errno)
    assert [(who, p[0]) for who, p in port.sent] == [(b"slow", 2), (b"slow", 3), (b"slow", 4), (b"other", ord("y"))]
    assert not backlog and backlog.counts()["bytes"] == 0


def test_flush_stops_at_eagain_and_forgets_a_client_that_left() -> None:
    backlog = ClientBacklog(max_bytes=1 << 20)
    for i in range(3):
        backlog.hold(b"c", Command.RESULT, b"b", bytes([i]) * 100)
    port = Port(room=1)
    backlog.flush(port.send, lambda: port.last_errno)
    assert len(port.sent) == 1 and b"c" in backlog and backlog.counts()["messages"] == 2
    port.gone = True
    backlog.flush(port.send, lambda: port.last_errno)
    assert b"c" not in backlog and backlog.counts()["dropped"] == 2
