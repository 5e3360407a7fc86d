"""HTTP to an OpenAI-compatible speech server: one aiohttp session on one event-loop thread.

Why aiohttp: it is already a base dependency (the broker's --http), its streaming reads are cancellable (a
cancelled job cancels the task reading the response, which closes the connection at once, so the server
stops generating), and one session on one loop serves any number of synthesis threads with one connection
pool. httpx's sync client would block a synthesis thread in a read that another thread cannot interrupt.

The synthesis threads call `stream()`, which runs the request on the loop and hands the body back through a
queue as it arrives; `probe()` is the health check. Errors come back as the exceptions below, which the
engine maps onto job outcomes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import json
import queue
import threading
from typing import Any, Iterator, Optional

import aiohttp

MAX_ERROR_BODY = 2048
_END = object()


class HttpStatusError(Exception):
    """The server answered with an error status (4xx/5xx)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class TransportError(Exception):
    """No usable answer: refused, reset, closed mid-stream, timed out."""


class Cancelled(Exception):
    """The caller's cancel event was set while waiting."""


@dataclasses.dataclass(frozen=True, slots=True)
class Timeouts:
    connect_s: float
    read_s: float  # the longest silence between two pieces of the body (and before the first)


class Transport:
    """An event loop thread with one aiohttp session; idempotent close()."""

    def __init__(self, *, base_url: str, api_key: Optional[str], timeouts: Timeouts, pool_size: int) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeouts = timeouts
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="openai-http-loop", daemon=True)
        self._thread.start()
        self._pool_size = pool_size
        self._session: Optional[aiohttp.ClientSession] = self._run(self._open(), timeout_s=10.0)
        self._closed = False

    async def _open(self) -> aiohttp.ClientSession:
        # +2: the health probe must not wait behind a full pool of speech requests.
        connector = aiohttp.TCPConnector(limit=self._pool_size + 2, limit_per_host=self._pool_size + 2)
        return aiohttp.ClientSession(connector=connector, headers=self._headers)

    def _run(self, coro: Any, *, timeout_s: float) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    # ---- speech ------------------------------------------------------------------------------------

    def stream(self, body: dict[str, Any], *, cancel: threading.Event, total_s: Optional[float],
               poll_s: float = 0.02) -> Iterator[bytes]:
        """POST /audio/speech and yield the response body as it arrives.

        Raises HttpStatusError, TransportError, or Cancelled (the request is aborted at once). Closing the
        generator early aborts the request too.
        """
        pieces: "queue.Queue[object]" = queue.Queue()
        future = asyncio.run_coroutine_threadsafe(self._post(body, pieces, total_s), self._loop)
        try:
            while True:
                try:
                    item = pieces.get(timeout=poll_s)
                except queue.Empty:
                    if cancel.is_set():
                        raise Cancelled() from None
                    continue
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, bytes)
                yield item
                if cancel.is_set():
                    raise Cancelled()
        finally:
            if not future.done():
                future.cancel()

    async def _post(self, body: dict[str, Any], pieces: "queue.Queue[object]", total_s: Optional[float]) -> None:
        assert self._session is not None
        timeout = aiohttp.ClientTimeout(total=total_s or None, sock_connect=self.timeouts.connect_s,
                                        sock_read=self.timeouts.read_s)
        try:
            async with self._session.post(f"{self.base_url}/audio/speech", json=body, timeout=timeout) as response:
                if response.status >= 400:
                    raw = await response.content.read(MAX_ERROR_BODY)
                    raise HttpStatusError(response.status, error_message(raw, response.reason))
                kind = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
                if kind.startswith("text/") or kind.endswith("json"):
                    raise TransportError(f"the server answered {kind} instead of audio")
                async for data in response.content.iter_any():
                    pieces.put(data)
            pieces.put(_END)
        except asyncio.CancelledError:
            raise
        except HttpStatusError as exc:
            pieces.put(exc)
        except TransportError as exc:
            pieces.put(exc)
        except asyncio.TimeoutError:
            pieces.put(TransportError("timed out waiting for the server"))
        except aiohttp.ClientConnectorError as exc:
            pieces.put(TransportError(f"cannot connect: {exc.os_error.strerror or exc}"))
        except aiohttp.ServerDisconnectedError:
            pieces.put(TransportError("the server closed the connection"))
        except aiohttp.ClientPayloadError as exc:
            pieces.put(TransportError(f"the response broke off mid-stream ({_cause(exc)})"))
        except (aiohttp.ClientError, OSError) as exc:
            pieces.put(TransportError(f"{type(exc).__name__}: {exc}"))

    # ---- health ------------------------------------------------------------------------------------

    def probe(self, *, timeout_s: float) -> Optional[str]:
        """GET /models, else /health under the API base or the root: None on the first 2xx, else why not."""
        try:
            result: Optional[str] = self._run(self._probe(timeout_s), timeout_s=2 * timeout_s + 1.0)
        except concurrent.futures.TimeoutError:
            return "health probe timed out"
        return result

    async def _probe(self, timeout_s: float) -> Optional[str]:
        assert self._session is not None
        timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=min(timeout_s, self.timeouts.connect_s))
        root = self.base_url[:-3] if self.base_url.endswith("/v1") else self.base_url
        why = "no answer"
        for url in dict.fromkeys((f"{self.base_url}/models", f"{self.base_url}/health", f"{root}/health")):
            try:
                async with self._session.get(url, timeout=timeout) as response:
                    await response.read()
                    if response.status < 300:
                        return None
                    why = f"GET {url[len(root):] or '/'} answered {response.status}"
                    if response.status in (401, 403):
                        return why + " (is api_key_file right?)"
            except asyncio.TimeoutError:
                return f"GET {url[len(root):]} timed out"
            except aiohttp.ClientConnectorError as exc:
                return f"cannot connect: {exc.os_error.strerror or exc}"
            except (aiohttp.ClientError, OSError) as exc:
                why = f"{type(exc).__name__}: {exc}"
        return why

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._session is not None:
            try:
                self._run(self._session.close(), timeout_s=5.0)
            except Exception:  # closing is best effort; the loop goes anyway
                pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5.0)
        if not self._thread.is_alive():
            self._loop.close()


def error_message(raw: bytes, reason: Optional[str]) -> str:
    """The server's own words for an error: OpenAI's {"error": {"message"}}, FastAPI's {"detail"}, or text."""
    text = raw.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            text = error["message"]
        elif isinstance(error, str):
            text = error
        elif isinstance(data.get("detail"), str):
            text = data["detail"]
        elif "detail" in data:
            text = json.dumps(data["detail"])[:300]
    text = " ".join(text.split())
    return (text or reason or "no message")[:300]


def _cause(exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    return type(cause).__name__
