"""What the tests import (fixtures are in the conftest.py files): real processes on random loopback ports
(Proc, BrokerProc), waiting for a condition (wait_for), and the tone test engine's expected sizes.

Nothing sleeps a fixed time: helpers wait for a condition with a timeout.
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
from typing import Any, Callable, Optional

import zmq

from tts_client import TtsClient
from tts_worker.engines.tone import SAMPLE_RATE, sentence_duration_s, sentence_split

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


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def tone_frames(text: str, length_scale: float = 1.0) -> int:
    """How many samples the tone test engine produces for `text` (one tone per sentence)."""
    return sum(max(1, int(round(sentence_duration_s(s, length_scale) * SAMPLE_RATE))) for s in sentence_split(text))


TONE_RATE = SAMPLE_RATE


def registered_workers(client: TtsClient) -> int:
    try:
        return len(client.broker_status(timeout_s=2).workers)
    except Exception:
        return 0


class TrackedContext(zmq.Context):
    """A Context that knows every socket made from it (pyzmq's own tests keep the same list).

    The scripted peers of tests/peers.py are the fixture's: they `adopt` themselves and are closed at teardown.
    Any other socket a test opens on this context it must close itself; one left open fails the test.
    """

    made: list[zmq.Socket]  # declared here, or pyzmq takes the attributes for socket options
    adopted: list[Any]

    def __init__(self) -> None:
        super().__init__()
        self.made: list[zmq.Socket] = []
        self.adopted: list[Any] = []

    def socket(self, socket_type: int, **kwargs: Any) -> zmq.Socket:  # type: ignore[override]
        sock = super().socket(socket_type, **kwargs)
        self.made.append(sock)
        return sock

    def adopt(self, peer: Any) -> None:
        """`peer.close()` runs at teardown (the scripted peers call this)."""
        self.adopted.append(peer)

    def close_all(self) -> list[str]:
        """Close the adopted peers, then every socket; returns the sockets that were left open otherwise."""
        for peer in self.adopted:
            peer.close()
        leaked = [repr(sock) for sock in self.made if not sock.closed]
        self.destroy(linger=0)
        return leaked


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
