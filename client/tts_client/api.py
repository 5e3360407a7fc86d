"""Every call of the two clients, once, as concurrent Futures: TtsClient waits for them, AsyncTtsClient awaits.

ClientApi turns a call's arguments into a protocol body (JobOptions for jobs, tts_protocol.messages models for
the requests), hands it to the ClientCore and converts the reply into what the call returns.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from concurrent.futures import Future
from typing import Any, Callable, Concatenate, Coroutine, Optional, ParamSpec, TypeVar

from pydantic import ValidationError

from tts_protocol import Command
from tts_protocol.messages import (
    DrainWorker,
    GetResult,
    JobsRequest,
    JobStatusRequest,
    JobView,
    ModelRequest,
    Reload,
    ReloadReply,
    Request,
    RetryJob,
    StatusView,
)

from tts_client.core import ClientCore, RequestBody, new_req_id
from tts_client.errors import ClientTimeout, InvalidRequest
from tts_client.jobspec import JobOptions, VoiceSettings
from tts_client.pending import ChunkSink, settle
from tts_client.results import SynthesisResult
from tts_client.settings import ClientSettings

T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")
F = TypeVar("F", bound=Callable[..., Any])

_RAISE: Any = object()


@dataclasses.dataclass(frozen=True, slots=True)
class PingReply:
    """A PONG and how long it took."""

    broker_id: str
    rtt_ms: float
    broker_time_ms: int


def resolve_settings(url: Optional[str], settings: Optional[ClientSettings],
                     overrides: dict[str, Any]) -> ClientSettings:
    """Settings from the environment (or the given object), with the URL and keyword overrides applied."""
    base = settings if settings is not None else ClientSettings()
    updates = dict(overrides)
    if url is not None:
        updates["broker_url"] = url
    if not updates:
        return base
    return ClientSettings.model_validate({**base.model_dump(), **updates})


def then(source: "Future[T]", convert: Callable[[T], R], *, on_timeout: R = _RAISE) -> "Future[R]":
    """A Future of convert(source's result); source's error passes through (or gives on_timeout if it is a
    ClientTimeout and on_timeout was given). Cancelling the new Future leaves the source alone."""
    derived: Future[R] = Future()

    def done(f: "Future[T]") -> None:
        if f.cancelled():
            derived.cancel()
            return
        error = f.exception()
        if error is None:
            try:
                settle(derived, result=convert(f.result()))
            except Exception as exc:
                settle(derived, error=exc)
        elif on_timeout is not _RAISE and isinstance(error, ClientTimeout):
            settle(derived, result=on_timeout)
        else:
            settle(derived, error=error)

    source.add_done_callback(done)
    return derived


class ClientApi:
    """The calls both clients offer, each returning a concurrent.futures.Future."""

    def __init__(self, settings: ClientSettings) -> None:
        self.settings = settings
        self.core = ClientCore(settings)

    def submit(self, text: str, options: JobOptions, *,
               sink: Optional[ChunkSink] = None) -> "tuple[str, Future[SynthesisResult]]":
        """Send a job (streamed if a chunk sink is given); its job_id and the Future of its result."""
        request = options.to_submit(self.settings, text, stream=sink is not None)
        future = self.core.submit(request, timeout_s=options.call_timeout_s(self.settings), sink=sink)
        return request.job_id, future

    def cancel(self, job_id: str) -> None:
        self.core.cancel(job_id)

    # ---- the request calls: TtsClient and AsyncTtsClient are made from these (blocking, awaitable) --------
    # One place to add a call: a method here with the public signature and docstring, then one line in each
    # client class (`name = blocking(ClientApi.name)` / `name = awaitable(ClientApi.name)`).

    def job_status(self, job_id: str, *, timeout_s: Optional[float] = None) -> "Future[JobView]":
        """The broker's view of one job; raises NotFound for a job it does not know."""
        reply = self._request(Command.JOB_STATUS, lambda r: JobStatusRequest(req_id=r, job_id=job_id), timeout_s)
        return then(reply, lambda body: body.job)

    def jobs(self, state: Optional[str] = None, *, limit: int = 50,
             timeout_s: Optional[float] = None) -> "Future[list[JobView]]":
        """Recent jobs, newest first; state="failed" is the dead-letter list."""
        reply = self._request(Command.JOBS, lambda r: JobsRequest.model_validate({"req_id": r, "state": state,
                                                                               "limit": limit}), timeout_s)
        return then(reply, lambda body: list(body.jobs))

    def retry(self, job_id: str, *, timeout_s: Optional[float] = None) -> "Future[JobView]":
        """Queue a failed or cancelled job again under the same id (fresh attempts); returns its view.
        Resubmit it (submit with the same job_id) to receive its result."""
        reply = self._request(Command.RETRY, lambda r: RetryJob(req_id=r, job_id=job_id), timeout_s)
        return then(reply, lambda body: body.job)

    def get_result(self, job_id: str, *, timeout_s: Optional[float] = None) -> "Future[SynthesisResult]":
        """A finished job's audio by its id alone; NotFound once the broker no longer retains it."""
        reply = self._request(Command.GET_RESULT, lambda r: GetResult(req_id=r, job_id=job_id), timeout_s)
        return then(reply, lambda got: SynthesisResult.from_message(got[0].result, got[1]))

    def broker_status(self, *, timeout_s: Optional[float] = None) -> "Future[StatusView]":
        """Queue depth, job counters and every connected worker."""
        reply = self._request(Command.BROKER_STATUS, lambda r: Request(req_id=r), timeout_s)
        return then(reply, lambda body: body.status)

    def ping(self, *, timeout_s: Optional[float] = None) -> "Future[PingReply]":
        """Round trip to the broker; raises BrokerUnavailable if it does not answer in time."""
        started = time.perf_counter()
        reply = self._request(Command.PING, lambda r: Request(req_id=r), timeout_s)
        return then(reply, lambda pong: PingReply(pong.broker_id, (time.perf_counter() - started) * 1000,
                                                  pong.time_ms))

    def is_alive(self, *, timeout_s: Optional[float] = None) -> "Future[bool]":
        """True if the broker answers a ping in time."""
        return then(self.ping(timeout_s=timeout_s), lambda _pong: True, on_timeout=False)

    def reload(self, model: Optional[str] = None, options: Optional[VoiceSettings] = None, *,
               timeout_s: Optional[float] = None) -> "Future[int]":
        """Hot-reload the workers serving `model` (all if None) with `options`; returns how many were told."""
        reply = self._request(Command.RELOAD, lambda r: Reload(req_id=r, model=model, options=dict(options or {})),
                              timeout_s)
        return then(reply, lambda body: body.workers)

    def reload_wait(self, model: Optional[str] = None, options: Optional[VoiceSettings] = None, *,
                    wait_s: float = 120.0, timeout_s: Optional[float] = None) -> "Future[ReloadReply]":
        """Hot-reload and wait until each told worker is back: the reply's `outcomes` say how each one did
        (reloaded, failed with its error, or missing after wait_s). RELOAD with wait_ms: the reply comes once
        every told worker is back (or wait_s passed)."""
        wait_ms = max(1, int(wait_s * 1000))
        timeout = (self.settings.request_timeout_s if timeout_s is None else timeout_s) + wait_s
        return self._request(Command.RELOAD, lambda r: Reload(req_id=r, model=model, options=dict(options or {}),
                                                              wait_ms=wait_ms), timeout)

    def drain(self, worker: Optional[str] = None, *, host: Optional[str] = None,
              timeout_s: Optional[float] = None) -> "Future[list[str]]":
        """Drain one worker (worker_id or name) or every worker of `host`: no new jobs, finish, then leave.

        Returns the ids of the drained workers; RemoteError `not_found` if none matched."""
        reply = self._request(Command.DRAIN_WORKER, lambda r: DrainWorker(req_id=r, worker=worker, host=host),
                              timeout_s)
        return then(reply, lambda body: list(body.workers))

    def pause(self, model: str, *, timeout_s: Optional[float] = None) -> "Future[list[str]]":
        """Stop dispatching jobs queued for routing key `model` (they wait); returns the paused keys."""
        reply = self._request(Command.PAUSE_MODEL, lambda r: ModelRequest(req_id=r, model=model), timeout_s)
        return then(reply, lambda body: list(body.paused))

    def resume(self, model: str, *, timeout_s: Optional[float] = None) -> "Future[list[str]]":
        """Dispatch jobs for `model` again; returns the keys still paused."""
        reply = self._request(Command.RESUME_MODEL, lambda r: ModelRequest(req_id=r, model=model), timeout_s)
        return then(reply, lambda body: list(body.paused))

    def _request(self, command: Command, build: Callable[[str], RequestBody],
                 timeout_s: Optional[float]) -> "Future[Any]":
        try:
            body = build(new_req_id())
        except (ValidationError, ValueError) as exc:
            raise InvalidRequest(f"invalid {command.name} request: {exc}") from exc
        timeout = self.settings.request_timeout_s if timeout_s is None else timeout_s
        return self.core.request(command, body, timeout_s=timeout)


def blocking(call: Callable[Concatenate[ClientApi, P], "Future[R]"]) -> Callable[Concatenate[ClientBase, P], R]:
    """TtsClient's method for a ClientApi call: the same signature and docstring, waiting for the result."""
    name = call.__name__

    def method(self: ClientBase, *args: P.args, **kwargs: P.kwargs) -> R:
        future: Future[R] = getattr(self._api, name)(*args, **kwargs)
        return future.result()

    return _like(method, call)


def awaitable(call: Callable[Concatenate[ClientApi, P], "Future[R]"]
              ) -> Callable[Concatenate[ClientBase, P], Coroutine[Any, Any, R]]:
    """AsyncTtsClient's method for a ClientApi call: the same signature and docstring, as a coroutine."""
    name = call.__name__

    async def method(self: ClientBase, *args: P.args, **kwargs: P.kwargs) -> R:
        future: Future[R] = getattr(self._api, name)(*args, **kwargs)
        return await asyncio.wrap_future(future)

    return _like(method, call)


def _like(method: F, call: Callable[..., Any]) -> F:
    method.__name__ = method.__qualname__ = call.__name__
    method.__doc__ = call.__doc__
    method.__wrapped__ = call  # type: ignore[attr-defined]  # inspect.signature and help() show the call's
    return method


class ClientBase:
    """What TtsClient and AsyncTtsClient share: settings, the ClientApi and its core, cancel and close."""

    def __init__(self, url: Optional[str] = None, *, settings: Optional[ClientSettings] = None,
                 **overrides: Any) -> None:
        self.settings = resolve_settings(url, settings, overrides)
        self._api = ClientApi(self.settings)

    @property
    def url(self) -> str:
        return self.settings.broker_url

    @property
    def broker_id(self) -> Optional[str]:
        """The broker_id of the latest PONG; it changes when the broker restarts."""
        return self._api.core.broker_id

    @property
    def closed(self) -> bool:
        return self._api.core.closed

    def cancel(self, job_id: str) -> None:
        """Ask the broker to cancel a job (queued: dropped; running: the worker is told to stop)."""
        self._api.cancel(job_id)

    def close(self) -> None:
        """Fail pending calls with ClientClosed and release the socket. Idempotent (blocks briefly)."""
        self._api.core.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r}{', closed' if self.closed else ''})"
