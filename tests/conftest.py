"""Shared fixtures: a real broker and real worker processes on random loopback ports.

Every process a test starts is tracked and killed at the end of the test; a test that leaves one running
fails. Nothing sleeps a fixed time: helpers wait for a condition with a timeout.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest
import zmq

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port that was free a moment ago: a last resort, racy while other tests run.

    Only for a server that cannot bind port 0 and say which port it got. Brokers bind `tcp://127.0.0.1:*` and
    name their endpoints in the ready file (BrokerProc), in-process sockets use bind_to_random_port, `tts up`
    takes ipc:// endpoints, and `dead_endpoint` gives a port where nothing listens.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition: Callable[[], object], timeout_s: float = 20.0, interval_s: float = 0.02,
             what: str = "") -> object:
    """Poll `condition` until it returns something truthy; fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what or condition}")
        time.sleep(interval_s)


class Proc:
    """A child process with its log file, stopped politely or killed."""

    def __init__(self, args: list[str], log_path: Path, env: Optional[dict[str, str]] = None) -> None:
        self.args = args
        self.log_path = log_path
        self._log = open(log_path, "ab")
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.popen = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=full_env,
                                      cwd=str(ROOT), start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.popen.pid, sig)

    def stop(self, timeout_s: float = 15.0) -> Optional[int]:
        """SIGTERM, wait, then SIGKILL the whole process group."""
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
        return self.popen.returncode

    def kill(self) -> None:
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


class BrokerProc:
    """A tts-broker process on random loopback ports, restartable on the same ports.

    The first start binds port `*` and learns the real endpoints from the broker's ready file, so no port is
    picked before it is bound; restarts bind the learned ones again.
    """

    def __init__(self, tmp: Path, procs: list[Proc], extra_args: list[str]) -> None:
        self.tmp = tmp
        self.procs = procs
        self.extra_args = extra_args
        self.frontend = "tcp://127.0.0.1:*"
        self.backend = "tcp://127.0.0.1:*"
        self.state_dir = tmp / "broker-state"  # journal + result cache, kept across restarts
        self.proc: Optional[Proc] = None
        self.starts = 0
        self.http: Optional[str] = None  # base URL of `--http`, from the ready file

    def start(self, extra_args: Optional[list[str]] = None) -> "BrokerProc":
        self.starts += 1
        ready = self.tmp / f"broker-ready-{self.starts}.json"
        args = [sys.executable, "-m", "tts_broker", "--frontend", self.frontend, "--backend", self.backend,
                "--ready-file", str(ready), "--log-level", "DEBUG", "--state-dir", str(self.state_dir),
                *self.extra_args, *(extra_args or [])]
        self.proc = Proc(args, self.tmp / f"broker-{self.starts}.log")
        self.procs.append(self.proc)
        proc = self.proc
        wait_for(lambda: ready.exists() or not proc.alive(), 20, what="broker ready file")
        if not proc.alive():
            raise AssertionError(f"broker exited at start:\n{proc.log()}")
        info = read_json(ready)
        self.frontend, self.backend = info["frontend"], info["backend"]
        self.http = info.get("http")
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()

    def stop(self) -> Optional[int]:
        assert self.proc is not None
        return self.proc.stop()

    def log(self) -> str:
        return "\n".join(p.log() for p in self.procs if "tts_broker" in p.args)


@pytest.fixture
def ctx() -> Iterator["zmq.Context"]:
    """A ZeroMQ context for hand-driven peers (tests/peers.py); every socket closed at teardown."""
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


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


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture
def dead_endpoint() -> Iterator[str]:
    """A tcp:// endpoint on 127.0.0.1 where nothing listens, for "broker unavailable" tests.

    A socket bound to the port but never listening holds it for the whole test: connections are refused, and
    no other process (another test's broker) can take the port meanwhile.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        yield f"tcp://127.0.0.1:{s.getsockname()[1]}"


# ---- the in-process tier: the real Broker loop in a thread --------------------------------------------


class FakeClock:
    """A monotonic clock a test moves by hand: the broker's timers (liveness, deadlines) fire when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class InProcBroker:
    """The real tts_broker.server.Broker (sockets, loop, commit, core) run in a thread on random loopback ports.

    Starts in milliseconds, so whole-broker behaviour is tested without a process; `clock` is the FakeClock
    when the test asked for one (else the real monotonic clock). Faults (kill -9, restarts on the same
    journal) stay with the subprocess tier (BrokerProc).
    """

    def __init__(self, tmp: Path, clock: Optional[FakeClock], **settings: object) -> None:
        import threading

        from tts_broker.server import Broker
        from tts_broker.settings import BrokerSettings

        options: dict[str, object] = {"frontend": "tcp://127.0.0.1:*", "backend": "tcp://127.0.0.1:*",
                                      "state_dir": str(tmp / "broker-state"), **settings}
        self.clock = clock
        self.context = zmq.Context()
        self.broker = Broker(BrokerSettings(_env_file=None, **options),  # type: ignore[call-arg]
                             context=self.context, clock=clock or time.monotonic)
        self.frontend, self.backend = self.broker.frontend_endpoint, self.broker.backend_endpoint
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, name="inproc-broker", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.broker.run()
        except BaseException as exc:  # the test fails at teardown with it
            self.errors.append(exc)

    def close(self) -> None:
        self.broker.stop()
        self.thread.join(10)
        alive = self.thread.is_alive()
        self.context.destroy(linger=0)
        assert not alive, "the in-process broker did not stop within 10 s"
        assert not self.errors, f"the in-process broker loop raised: {self.errors[0]!r}"


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
