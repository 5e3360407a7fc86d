"""Replies held for clients that are not reading, bounded in bytes per client.

ZeroMQ's SNDHWM counts messages, not bytes, so the client port keeps it small (`client_sndhwm`, 32): ZeroMQ
then holds at most that many messages per client, and with ROUTER_MANDATORY a send beyond it fails with
EAGAIN instead of queueing. Such a reply (and every later one to that client, to keep their order) waits
here, where its bytes are counted, until the client reads again; the server retries every tick. Beyond
`client_backlog_max_bytes` per client the oldest replies are dropped and counted. A client that lost a
RESULT this way gets it again by resubmitting the job id while the job is retained (PROTOCOL.md 4); the
Python and Node clients do so on their own when a job stays quiet.

Memory per silent client is therefore at most client_sndhwm x the largest reply (in ZeroMQ) plus
client_backlog_max_bytes (here); the audio itself is shared with retention, not copied.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Any, Callable

import zmq

from tts_protocol.constants import Command

from tts_broker.hooks import Hook

log = logging.getLogger(__name__)

_SMALL_BODY_BYTES = 256  # what a reply without payload is counted as
Send = Callable[[bytes, Command, Any, Any], bool]
Held = tuple[Command, Any, Any, int]


def reply_bytes(body: Any, payload: Any) -> int:
    size = len(body) if isinstance(body, (bytes, bytearray)) else _SMALL_BODY_BYTES
    if payload is not None:
        size += len(payload) if isinstance(payload, (bytes, bytearray, memoryview)) else len(payload.buffer)
    return size


class ClientBacklog(Hook):
    """Per-client FIFO of replies ZeroMQ would not take yet, with a byte budget per client.

    A Hook only for `status`: the server, which owns the sockets, holds and flushes replies.
    """

    def __init__(self, *, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._held: dict[bytes, collections.deque[Held]] = {}
        self._bytes: dict[bytes, int] = {}
        self.dropped = 0
        self.dropped_bytes = 0
        self._moved_at = 0.0  # monotonic time a backlog last started or drained a message

    def __contains__(self, identity: bytes) -> bool:
        return identity in self._held

    def __bool__(self) -> bool:
        return bool(self._held)

    def hold(self, identity: bytes, command: Command, body: Any, payload: Any) -> None:
        """Keep a reply for later; drop this client's oldest ones beyond the budget."""
        size = reply_bytes(body, payload)
        queue = self._held.get(identity)
        if queue is None:
            queue = self._held[identity] = collections.deque()
            self._moved_at = time.monotonic()
        queue.append((command, body, payload, size))
        total = self._bytes.get(identity, 0) + size
        dropped = 0
        while total > self.max_bytes and queue:
            _, _, _, old = queue.popleft()
            total -= old
            dropped += 1
            self.dropped_bytes += old
        self.dropped += dropped
        if dropped:
            log.warning("client %r is not reading: %d oldest replies dropped (budget %d bytes)", identity, dropped,
                        self.max_bytes)
        if queue:
            self._bytes[identity] = total
        else:
            self._forget(identity)

    def flush(self, send: Send, last_errno: Callable[[], int]) -> None:
        """Send what each client can take now; forget clients that are gone."""
        for identity in list(self._held):
            queue = self._held[identity]
            while queue:
                command, body, payload, size = queue[0]
                if not send(identity, command, body, payload):
                    if last_errno() != zmq.EAGAIN:  # the client left: nobody will read these
                        self.dropped += len(queue)
                        self.dropped_bytes += self._bytes.get(identity, 0)
                        queue.clear()
                    break
                queue.popleft()
                self._bytes[identity] -= size
                self._moved_at = time.monotonic()
            if not queue:
                self._forget(identity)

    def active_since(self, when: float) -> bool:
        """True if some backlog started or moved after `when` (its client is likely to read again soon)."""
        return bool(self._held) and self._moved_at > when

    def _forget(self, identity: bytes) -> None:
        self._held.pop(identity, None)
        self._bytes.pop(identity, None)

    def status(self) -> dict[str, Any]:
        return {"client_backlog": self.counts()}

    def counts(self) -> dict[str, int]:
        return {"clients": len(self._held), "messages": sum(len(q) for q in self._held.values()),
                "bytes": sum(self._bytes.values()), "max_bytes_per_client": self.max_bytes,
                "dropped": self.dropped, "dropped_bytes": self.dropped_bytes}
