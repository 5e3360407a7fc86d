"""Under CURVE: which client routing ids have a live connection with their bound key, and replies held for the rest.

KeyBinding (handlers.py) drops messages from a routing id that arrive with another key than the first one, and
ROUTER_HANDOVER off keeps a second connection from taking an id while its owner is connected. Neither covers
the owner's absence: once alice's connection closed, mallory (another allowed key) may connect under the
routing id "alice" and, without sending anything, receive what the broker sends to "alice" (her RESULT). So
replies are bound to the connection as well as the id: an id is *linked* while the connection that last sent
from it with its bound key is open, and the broker sends only to linked ids. What is addressed to an unlinked
id is withheld (a chosen id) or dropped (an id ZeroMQ generated: it is never given out again), until a
message from that id with the same key links it again; then the withheld replies go out first.

Which connection a message came from is its source descriptor (`zmq.SRCFD`, read from the frames received
zero-copy); which connections closed is the frontend's socket monitor (EVENT_DISCONNECTED, value: the
descriptor). ZMQ_ROUTER_NOTIFY would say the same in band, but it is a draft option this libzmq lacks.

The ordering argument: libzmq's I/O thread emits EVENT_DISCONNECTED for a connection (stream_engine error())
*before* it tells the session to end the pipe and before it closes the descriptor. The ROUTER forgets the
routing id only when this thread processes that pipe's end, and with ROUTER_HANDOVER off a new connection can
take the id only after that; a new connection can get the same descriptor number only after the close. So a
disconnect that makes an id takeable, or a descriptor reusable, is already in the monitor pipe when the takeover
or reuse could be observed here: draining the monitor (without blocking) before each send to a client, and
before linking a descriptor to an id, sees it. What this cannot order is the send call itself: libzmq processes
pending commands at the start of a send, so a connection that completes its whole CURVE handshake between the
drain and the next library call could still receive that one message (docs/security.md).

Everything is bounded: links by open descriptors (each is removed on its disconnect), away ids by `max_ids`,
withheld replies by `max_withheld_bytes` over all ids (the oldest dropped first; a client recovers a lost
RESULT by resubmitting its job id, PROTOCOL.md 4).
"""

from __future__ import annotations

import collections
import logging
import secrets
import select
import struct
from typing import Any, Optional

import zmq

from tts_protocol.curve import close_monitor

from tts_broker.backlog import reply_bytes
from tts_broker.hooks import Hook
from tts_broker.outbox import Outgoing
from tts_broker.throttle import LogThrottle

log = logging.getLogger(__name__)

_EVENT = struct.Struct("=HI")  # a monitor message's first frame: event (uint16), value (uint32)
_NO_FD = -1


def generated(identity: bytes) -> bool:
    """True for a routing id shaped like the ones the ROUTER makes (5 bytes, first 0): never given out again.

    A peer may still present such an id of its own; nothing is withheld for it either way.
    """
    return len(identity) == 5 and identity[0] == 0


def source_fd(frames: list[Any]) -> int:
    """The descriptor of the connection a message arrived on (zmq.SRCFD), or -1 if libzmq does not say."""
    try:
        return int(frames[1].get(zmq.SRCFD))
    except (zmq.ZMQError, IndexError, AttributeError, TypeError):
        return _NO_FD


class ClientLinks(Hook):
    """Live (routing id, key) connections on the client port, and the replies withheld from ids without one.

    A Hook only for `status`. The server calls `watch` once the client port exists, `seen` for each message
    whose key KeyBinding accepted, `allows` before each send to a client, `withhold` for what it may not send,
    and `close` before it closes the socket.
    """

    def __init__(self, *, max_withheld_bytes: int, max_ids: int = 100_000) -> None:
        self.max_withheld_bytes = max_withheld_bytes
        self.max_ids = max_ids
        self._sock: Optional[zmq.Socket] = None
        self._monitor: Optional[zmq.Socket] = None
        self._signal: Optional[select.poll] = None  # the monitor's ZMQ_FD: readable once something arrived
        self._fd_of: dict[bytes, int] = {}  # linked id -> its connection's descriptor
        self._key_of: dict[bytes, str] = {}  # linked id -> its key
        self._id_at: dict[int, bytes] = {}  # descriptor -> the id linked to it
        self._away: collections.OrderedDict[bytes, str] = collections.OrderedDict()  # chosen id -> key, unlinked
        self._held: collections.OrderedDict[bytes, collections.deque[tuple[Outgoing, int]]] = \
            collections.OrderedDict()
        self._held_bytes = 0
        self.withheld = 0  # replies withheld so far
        self.dropped = 0  # replies not sent: to an id that will not come back, or beyond the budget
        self._drop_log = LogThrottle(log)  # a flood over the budget drops one reply per reply: one line a minute

    # ---- the monitor -------------------------------------------------------------------------------

    def watch(self, sock: zmq.Socket) -> None:
        """Monitor the client port's ROUTER for closed connections (its one monitor: nothing else may take it)."""
        address = f"inproc://tts-client-links-{secrets.token_hex(8)}"
        sock.monitor(address, zmq.EVENT_DISCONNECTED)
        monitor = sock.context.socket(zmq.PAIR)
        # No receive limit: libzmq's I/O thread would otherwise wait for (or drop) events not read yet, and a
        # lost disconnect is an id handed to the next connection. One event per closed connection, read every
        # turn of the loop, so this stays small.
        monitor.setsockopt(zmq.RCVHWM, 0)
        monitor.setsockopt(zmq.LINGER, 0)
        monitor.connect(address)
        self._signal = select.poll()
        self._signal.register(monitor.getsockopt(zmq.FD), select.POLLIN)
        self._sock, self._monitor = sock, monitor
        self._drain()

    def poll(self) -> None:
        """Read the disconnects libzmq reported; each unlinks the id bound to that descriptor."""
        # The usual case, nothing new, costs one poll(2) of the monitor's ZMQ_FD (about 0.4 us; ZMQ_EVENTS
        # alone is 1.1 us): every drain ends with ZMQ_EVENTS saying nothing is waiting, after which libzmq
        # signals that descriptor for the next event (zmq_getsockopt(3), ZMQ_FD). Only this class touches
        # the monitor socket, so no other call can consume the signal.
        if self._signal is not None and self._signal.poll(0):
            self._drain()

    def _drain(self) -> None:
        monitor = self._monitor
        if monitor is None:
            return
        while int(monitor.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            frames = monitor.recv_multipart(zmq.NOBLOCK)
            event, fd = _EVENT.unpack(frames[0])
            if event == zmq.EVENT_DISCONNECTED:
                self._closed(fd)

    def _closed(self, fd: int) -> None:
        identity = self._id_at.pop(fd, None)
        if identity is None or self._fd_of.get(identity) != fd:
            return
        del self._fd_of[identity]
        key = self._key_of.pop(identity)
        if not generated(identity):
            self._away[identity] = key
            self._away.move_to_end(identity)
            if len(self._away) > self.max_ids:
                gone, _ = self._away.popitem(last=False)
                self._drop_held(gone)
        log.debug("client routing id %r (key %s) disconnected: replies to it are withheld", identity, key)

    # ---- the way in --------------------------------------------------------------------------------

    def seen(self, identity: bytes, fd: int, key: str) -> list[Outgoing]:
        """A message from `identity` with its bound `key` on descriptor `fd`; returns replies withheld for it.

        The returned replies (oldest first) are to be sent before anything this message causes.
        """
        if fd == _NO_FD:
            return []
        if self._id_at.get(fd) == identity:  # the usual case: the same connection again
            # (Or the same id back on the same descriptor number before the old connection's close was read:
            # that close then unlinks it, and replies wait for its next message. Withheld, never misdelivered;
            # the loop reads the monitor every turn, so this takes a reconnect within one turn.)
            return []
        self.poll()  # a descriptor reused, or the id on a new connection: learn of the old one's end first
        stale = self._id_at.pop(fd, None)
        if stale is not None and self._fd_of.get(stale) == fd:  # its close unread (cannot happen; be safe)
            del self._fd_of[stale]
            self._key_of.pop(stale, None)
        old_fd = self._fd_of.get(identity)
        if old_fd is not None:
            self._id_at.pop(old_fd, None)
        self._fd_of[identity] = fd
        self._key_of[identity] = key
        self._id_at[fd] = identity
        if self._away.pop(identity, key) != key:  # the id's binding was forgotten and taken by another key
            self._drop_held(identity)
        return self._release(identity)

    # ---- the way out -------------------------------------------------------------------------------

    def allows(self, identity: bytes) -> bool:
        """True if a reply may go to `identity` now: its bound key's connection is the one open under it."""
        self.poll()
        return identity in self._fd_of

    def withhold(self, message: Outgoing) -> None:
        """Keep a reply for an id whose connection closed until it is back with its key; drop it otherwise."""
        identity = message[1]
        key = self._away.get(identity)
        if key is None:  # a generated id, or one not seen since this broker started: nobody to keep it for
            self.dropped += 1
            log.debug("client routing id %r is not connected: %s dropped", identity, message[2].name)
            return
        size = reply_bytes(message[3], message[4])
        queue = self._held.get(identity)
        if queue is None:
            queue = self._held[identity] = collections.deque()
        queue.append((message, size))
        self._held_bytes += size
        self.withheld += 1
        while self._held_bytes > self.max_withheld_bytes and self._held:
            oldest = next(iter(self._held))
            old_queue = self._held[oldest]
            _, old_size = old_queue.popleft()
            self._held_bytes -= old_size
            self.dropped += 1
            if not old_queue:
                del self._held[oldest]
            self._drop_log.warning("replies withheld from disconnected clients exceed %d bytes: the oldest"
                                   " (to %r) dropped", self.max_withheld_bytes, oldest)

    def _release(self, identity: bytes) -> list[Outgoing]:
        queue = self._held.pop(identity, None)
        if not queue:
            return []
        self._held_bytes -= sum(size for _, size in queue)
        log.info("client routing id %r is back with its key: %d withheld replies sent", identity, len(queue))
        return [message for message, _ in queue]

    def _drop_held(self, identity: bytes) -> None:
        queue = self._held.pop(identity, None)
        if queue:
            self._held_bytes -= sum(size for _, size in queue)
            self.dropped += len(queue)

    def close(self) -> None:
        """Stop the monitor (before the frontend socket closes); a second call does nothing."""
        if self._monitor is None or self._sock is None:
            return
        close_monitor(self._sock, self._monitor)
        self._monitor, self._signal = None, None

    def status(self) -> dict[str, Any]:
        return {"client_links": self.counts()}

    def counts(self) -> dict[str, int]:
        return {"linked": len(self._fd_of), "away": len(self._away),
                "withheld_clients": len(self._held), "withheld_messages": sum(len(q) for q in self._held.values()),
                "withheld_bytes": self._held_bytes, "withheld": self.withheld, "dropped": self.dropped}
