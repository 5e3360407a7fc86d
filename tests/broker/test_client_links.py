"""ClientLinks (client_links.py) on a real ROUTER and real DEALERs: links follow connections, replies wait for keys.

The keys are passed in as the server would after KeyBinding accepted a message (the CURVE handshake itself is
tested end to end in tests/e2e/test_curve_security.py); what is real here is the source descriptor of each
message and the ROUTER's monitor reporting closed connections.
"""

from __future__ import annotations

from typing import Any

import pytest
import zmq

from tts_protocol import Command

from tests.harness import TrackedContext, wait_for
from tts_broker.client_links import ClientLinks, generated, source_fd
from tts_broker.handlers import KeyBinding
from tts_broker.outbox import Outgoing

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


class Port:
    """A bound ROUTER watched by ClientLinks, as the broker's client port is."""

    def __init__(self, ctx: zmq.Context, links: ClientLinks) -> None:
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.ROUTER_HANDOVER, 0)
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.endpoint = f"tcp://127.0.0.1:{self.sock.bind_to_random_port('tcp://127.0.0.1')}"
        self.links = links
        links.watch(self.sock)

    def peer(self, ctx: zmq.Context, identity: bytes | None) -> zmq.Socket:
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        if identity is not None:
            dealer.setsockopt(zmq.ROUTING_ID, identity)
        dealer.connect(self.endpoint)
        return dealer

    def hear(self, dealer: zmq.Socket, key: str, timeout_ms: int = 5000) -> tuple[bytes, list[Outgoing]]:
        """`dealer` sends; the port reads it zero-copy and links it under `key`: (its id, replies released)."""
        dealer.send_multipart([b"", b"hello"])
        if not self.sock.poll(timeout_ms):
            return b"", []
        frames = [self.sock.recv(copy=False)]
        while frames[-1].more:
            frames.append(self.sock.recv(copy=False))
        identity = frames[0].bytes
        return identity, self.links.seen(identity, source_fd(frames), key)

    def close(self) -> None:
        self.links.close()
        self.links.close()  # idempotent
        self.sock.close(0)


def reply(identity: bytes, text: bytes = b"result", payload: Any = None) -> Outgoing:
    return (False, identity, Command.RESULT, text, payload)


def test_an_id_is_linked_while_its_connection_is_open_and_replies_wait_for_its_key() -> None:
    ctx = TrackedContext()
    port = Port(ctx, ClientLinks(max_withheld_bytes=1 << 20))
    try:
        alice = port.peer(ctx, b"alice")
        identity, released = port.hear(alice, "client:alice")
        assert identity == b"alice", "alice's message was read" and released == [] and port.links.allows(b"alice")
        assert not port.links.allows(b"bob"), "an id never seen is not linked"

        alice.close(0)
        wait_for(lambda: not port.links.allows(b"alice"), 10, what="the monitor reporting alice's close")
        port.links.withhold(reply(b"alice", b"r1"))
        port.links.withhold(reply(b"alice", b"r2"))
        assert port.links.counts()["withheld_messages"] == 2

        back, released = wait_for_link(ctx, port, b"alice", "client:alice")
        assert [m[3] for m in released] == [b"r1", b"r2"], "withheld replies come back in order, once"
        assert port.links.allows(b"alice") and port.links.counts()["withheld_messages"] == 0
        assert port.hear(back, "client:alice")[1] == []
        back.close(0)
    finally:
        port.close()
        ctx.destroy(linger=0)


def test_withheld_replies_are_dropped_for_another_key_generated_ids_and_beyond_the_budget() -> None:
    ctx = TrackedContext()
    port = Port(ctx, ClientLinks(max_withheld_bytes=300, max_ids=1))
    try:
        alice = port.peer(ctx, b"alice")
        port.hear(alice, "client:alice")
        anon = port.peer(ctx, None)
        anon_id, _ = port.hear(anon, "client:anon")
        assert generated(anon_id) and not generated(b"alice") and port.links.allows(anon_id)
        alice.close(0)
        anon.close(0)
        wait_for(lambda: not port.links.allows(b"alice") and not port.links.allows(anon_id), 10,
                 what="both closes reported")

        port.links.withhold(reply(anon_id))
        assert port.links.counts()["withheld_messages"] == 0, "a generated id never comes back: nothing kept"
        port.links.withhold(reply(b"alice", b"old", b"x" * 200))
        port.links.withhold(reply(b"alice", b"new", b"y" * 200))
        counts = port.links.counts()
        assert counts["withheld_messages"] == 1 and counts["withheld_bytes"] <= 300, "oldest dropped beyond budget"

        # alice's binding was forgotten (KeyBinding is bounded) and another key took the id: it gets nothing.
        mallory, released = wait_for_link(ctx, port, b"alice", "client:mallory")
        assert released == [] and port.links.counts()["withheld_messages"] == 0
        mallory.close(0)
    finally:
        port.close()
        ctx.destroy(linger=0)


def test_a_reused_descriptor_links_the_new_connection_only() -> None:
    """Descriptor numbers come back: the close of the old connection must not unlink the new one's id."""
    ctx = TrackedContext()
    port = Port(ctx, ClientLinks(max_withheld_bytes=1 << 20))
    try:
        alice = port.peer(ctx, b"alice")
        port.hear(alice, "client:alice")
        alice.close(0)
        bob = port.peer(ctx, b"bob")
        port.hear(bob, "client:bob")  # often on alice's old descriptor, before or after her close is reported
        wait_for(lambda: not port.links.allows(b"alice"), 10, what="alice's close reported")
        assert port.links.allows(b"bob"), "alice's close did not unlink bob"
        bob.close(0)
        wait_for(lambda: not port.links.allows(b"bob"), 10, what="bob's close reported")
    finally:
        port.close()
        ctx.destroy(linger=0)


def wait_for_link(ctx: zmq.Context, port: Port, identity: bytes, key: str) -> tuple[zmq.Socket, list[Outgoing]]:
    """Connect under `identity` until the port reads a message under it (libzmq keeps a connection that
    arrives before the ROUTER let go of the old one anonymous); the socket and every reply released."""
    released: list[Outgoing] = []
    dealers: list[zmq.Socket] = []

    def one() -> bool:
        if dealers:
            dealers[-1].close(0)
        dealers.append(port.peer(ctx, identity))
        heard, more = port.hear(dealers[-1], key, timeout_ms=300)
        released.extend(more)
        return heard == identity

    wait_for(one, 10, interval_s=0.0, what="a connection read under its id")
    return dealers[-1], released


def test_a_binding_in_use_is_never_the_one_forgotten() -> None:
    binding = KeyBinding("client", max_ids=2)
    assert binding.check(b"alice", "client:alice") and binding.check(b"bob", "client:bob")
    assert binding.check(b"alice", "client:alice")  # alice is used again: bob is now the oldest
    assert binding.check(b"carol", "client:carol")
    assert not binding.check(b"alice", "client:mallory"), "alice's binding survived"
    assert binding.check(b"bob", "client:mallory"), "bob's binding was the one forgotten"
