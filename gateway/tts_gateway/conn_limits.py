"""uvicorn's HTTP protocol with a header timeout: a connection that has not sent a whole request in time closes.

uvicorn's keep-alive timeout starts only after a response, so a connection that never sends a request (or
sends its headers a byte a minute) stayed open for ever, holding a descriptor; 1,100 of them exhaust a
1,024-descriptor process. `limit_concurrency` (the connection cap) and `timeout_keep_alive` are uvicorn's own.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)


def protocol_class(header_timeout_s: float) -> type:
    """The HTTP protocol uvicorn would pick ("auto": httptools if installed, else h11), with a header timeout."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as Base
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol as Base  # type: ignore[assignment]

    class HeaderTimeoutProtocol(Base):  # type: ignore[valid-type,misc]
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._header_timer = asyncio.get_running_loop().call_later(header_timeout_s, self._header_timeout)

        def _header_timeout(self) -> None:
            if self.cycle is None and not self.transport.is_closing():  # no request has begun on it
                self.transport.close()

        def connection_lost(self, exc: Any) -> None:
            self._header_timer.cancel()
            super().connection_lost(exc)

    return HeaderTimeoutProtocol
