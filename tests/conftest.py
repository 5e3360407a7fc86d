"""Fixtures for every test folder: a real broker and real worker processes on random loopback ports, clients
on them, and a ZeroMQ context whose sockets must all be closed by the end of the test.

Every process a test starts is tracked and killed at the end of the test; a test that leaves one running, a
socket open or a client's I/O thread behind fails. Helpers the tests import are in harness.py; scripted
protocol peers in peers.py; a folder's own fixtures in its conftest.py.
"""

from __future__ import annotations

import socket
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pytest

from tts_client import TtsClient

from harness import BrokerProc, FakeClock, InProcBroker, Proc, TrackedContext, registered_workers, wait_for


@pytest.fixture
def ctx() -> Iterator[TrackedContext]:
    """A ZeroMQ context for hand-driven peers (tests/peers.py); a socket the test left open fails it."""
    context = TrackedContext()
    yield context
    leaked = context.close_all()
    if leaked:
        pytest.fail(f"the test left {len(leaked)} socket(s) open: {', '.join(leaked)}")


@pytest.fixture
def procs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[Proc]]:
    """All processes the test started; killed at teardown."""
    if request.node.get_closest_marker("unit"):
        pytest.fail("a test marked `unit` must not start processes (the broker and worker fixtures do)")
    started: list[Proc] = []
    yield started
    for p in started:
        p.kill()


@pytest.fixture
def broker_factory(tmp_path: Path, procs: list[Proc]) -> Callable[..., BrokerProc]:
    def make(*extra_args: str, start: bool = True) -> BrokerProc:
        b = BrokerProc(tmp_path, procs, list(extra_args))
        return b.start() if start else b

    return make


@pytest.fixture
def broker(broker_factory: Callable[..., BrokerProc]) -> BrokerProc:
    """A running broker with default settings (1 s heartbeats)."""
    return broker_factory()


@pytest.fixture
def start_worker(tmp_path: Path, procs: list[Proc]) -> Callable[..., Proc]:
    """Start `tts-worker` against a broker: start_worker(broker, engine="tone", opts={...}, concurrency=1)."""
    counter = [0]

    def start(broker: BrokerProc, engine: str = "tone", opts: Optional[dict[str, object]] = None,
              concurrency: int = 1, extra_args: Optional[list[str]] = None,
              env: Optional[dict[str, str]] = None) -> Proc:
        counter[0] += 1
        args = [sys.executable, "-m", "tts_worker", "--broker", broker.backend, "--engine", engine,
                "--concurrency", str(concurrency), "--log-level", "DEBUG", "--name", f"test-{counter[0]}"]
        for key, value in (opts or {}).items():
            args += ["--engine-opt", f"{key}={value}"]
        args += extra_args or []
        p = Proc(args, tmp_path / f"worker-{counter[0]}.log", env)
        procs.append(p)
        return p

    return start


@pytest.fixture
def dead_endpoint() -> Iterator[str]:
    """A tcp:// endpoint on 127.0.0.1 where nothing listens, for "broker unavailable" tests.

    A socket bound to the port but never listening holds it for the whole test: connections are refused, and
    no other process (another test's broker) can take the port meanwhile.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        yield f"tcp://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def make_client() -> Iterator[Callable[..., TtsClient]]:
    """make_client(url, **settings) -> TtsClient, closed at teardown (short timeouts suit tests)."""
    made: list[TtsClient] = []

    def make(url: str, **overrides: Any) -> TtsClient:
        overrides.setdefault("timeout_s", 60.0)
        overrides.setdefault("request_timeout_s", 5.0)
        c = TtsClient(url, **overrides)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()
    leaked = [t for t in threading.enumerate() if t.name == "tts-client-io"]
    assert not leaked, f"client I/O threads still running: {leaked}"


@pytest.fixture
def client(broker: BrokerProc, make_client: Callable[..., TtsClient]) -> TtsClient:
    """A TtsClient connected to the `broker` fixture."""
    return make_client(broker.frontend)


@pytest.fixture
def tone_workers(start_worker: Callable[..., Proc], make_client: Callable[..., TtsClient]
                 ) -> Callable[..., Proc]:
    """tone_workers(broker, n=1, **engine_opts): start one supervisor with n tone workers, wait until all
    n are registered with the broker, return the supervisor's Proc."""

    def start(broker: BrokerProc, n: int = 1, timeout_s: float = 60.0, expect_total: Optional[int] = None,
              **opts: Any) -> Proc:
        watcher = make_client(broker.frontend)
        before = registered_workers(watcher)
        proc = start_worker(broker, engine="tone", opts=opts or None, concurrency=n)
        total = expect_total if expect_total is not None else before + n
        wait_for(lambda: registered_workers(watcher) >= total or not proc.alive(), timeout_s,
                 what=f"{total} tone workers registered")
        if not proc.alive():
            raise AssertionError(f"tone worker exited:\n{proc.log()}")
        return proc

    return start


@pytest.fixture
def inproc_broker_factory(tmp_path: Path) -> Iterator[Callable[..., InProcBroker]]:
    """inproc_broker_factory(fake_clock=False, **settings): an InProcBroker; all are stopped at teardown."""
    started: list[InProcBroker] = []

    def make(*, fake_clock: bool = False, **settings: object) -> InProcBroker:
        folder = tmp_path / f"inproc-{len(started)}"
        folder.mkdir()
        b = InProcBroker(folder, FakeClock() if fake_clock else None, **settings)
        started.append(b)
        return b

    yield make
    for b in started:
        b.close()


@pytest.fixture
def inproc_broker(inproc_broker_factory: Callable[..., InProcBroker]) -> InProcBroker:
    """An in-process broker with default settings and the real clock."""
    return inproc_broker_factory()
