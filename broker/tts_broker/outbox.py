"""The outbox: messages the lifecycle decided to send, kept in order until the server sends them."""

from __future__ import annotations

from typing import Any, Optional

from tts_protocol import ErrorCode
from tts_protocol.constants import Command
from tts_protocol.messages import Body, Error

Outgoing = tuple[bool, bytes, Command, Any, Any]  # (to_worker, routing id, command, body, payload)


class Outbox:
    """Messages the lifecycle wants sent, in order. `later` ones wait for the journal's group commit."""

    __slots__ = ("now", "later", "_durable")

    def __init__(self, *, durable: bool) -> None:
        self.now: list[Outgoing] = []
        self.later: list[Outgoing] = []
        self._durable = durable

    def client(self, identity: bytes, command: Command, body: Body | bytes, payload: Any = None, *,
               durable: bool = False) -> None:
        (self.later if durable and self._durable else self.now).append((False, identity, command, body, payload))

    def worker(self, identity: bytes, command: Command, body: Body | bytes, *, durable: bool = False) -> None:
        (self.later if durable and self._durable else self.now).append((True, identity, command, body, None))

    def error(self, identity: bytes, code: ErrorCode, message: str, *, job_id: Optional[str] = None,
              req_id: Optional[str] = None) -> None:
        self.client(identity, Command.ERROR, Error(job_id=job_id, req_id=req_id, code=code.value,
                                                   message=message[:4096], retryable=code.retryable))
