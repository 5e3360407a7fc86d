"""`tts up`: a broker and a worker supervisor as child processes of one foreground command.

Stopping order matters: the broker is asked to drain first (it stops taking jobs and lets running ones
finish while the workers are still there), then the workers are stopped, then anything left is killed.
Children run in their own session, so a terminal's Ctrl-C reaches only us and we stop them in that order;
on Linux they also get SIGTERM should this process die without cleaning up.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Optional

from tts_client.ports import port_holders

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: ask Linux to SIGTERM it when its parent goes away."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def client_endpoint(bound: str) -> str:
    """The address a local client uses for an endpoint the broker bound (`*` or 0.0.0.0 -> 127.0.0.1)."""
    for wildcard in ("://*:", "://0.0.0.0:"):
        if wildcard in bound:
            return bound.replace(wildcard, "://127.0.0.1:")
    return bound


@dataclasses.dataclass
class StackConfig:
    """What `tts up` starts."""

    frontend: str
    backend: str
    workers: int
    engine: str
    engine_opts: list[str]
    device: Optional[str] = None
    broker_args: list[str] = dataclasses.field(default_factory=list)
    log_level: str = "INFO"
    drain_grace_s: float = 30.0
    gateway: Optional[str] = None  # HOST:PORT for `tts gateway` beside the broker; None = no gateway


class LocalStack:
    """The broker and worker child processes, started and stopped together."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.broker: Optional[subprocess.Popen] = None
        self.worker: Optional[subprocess.Popen] = None
        self.gateway: Optional[subprocess.Popen] = None
        self._tmp = tempfile.TemporaryDirectory(prefix="tts-up-")

    def _spawn(self, args: list[str], env_extra: Optional[dict[str, str]] = None) -> subprocess.Popen:
        preexec = _die_with_parent if sys.platform.startswith("linux") else None
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env_extra or {})}
        return subprocess.Popen(args, env=env, start_new_session=True, preexec_fn=preexec)

    def start_broker(self, timeout_s: float = 30.0) -> dict:
        """Start the broker and wait for its ready file; returns it (frontend, backend, pid, broker_id)."""
        cfg = self.config
        ready = Path(self._tmp.name) / "broker-ready.json"
        args = [sys.executable, "-m", "tts_broker", "--frontend", cfg.frontend, "--backend", cfg.backend,
                "--ready-file", str(ready), "--log-level", cfg.log_level,
                "--drain-grace-s", str(cfg.drain_grace_s), *cfg.broker_args]
        if not any(a.startswith("--default-model") for a in cfg.broker_args):
            # One engine serves everything here; naming it lets the result cache key jobs that name no model.
            args += ["--default-model", cfg.engine]
        self.broker = self._spawn(args)
        try:
            return _await_ready_file(self.broker, "broker", ready, timeout_s)
        except RuntimeError as exc:
            if self.broker.returncode != _BROKER_EXIT_BIND:
                raise
            holders = port_holders([cfg.frontend, cfg.backend])
            raise RuntimeError(f"the broker cannot bind {cfg.frontend} / {cfg.backend}: "
                               + ("; ".join(holders) if holders else "the address is taken or not ours to use")
                               ) from exc

    def start_gateway(self, timeout_s: float = 30.0) -> Optional[dict]:
        """Start `tts gateway` on config.gateway (if set) and wait until it listens; returns {url, pid}."""
        cfg = self.config
        if cfg.gateway is None:
            return None
        ready = Path(self._tmp.name) / "gateway-ready.json"
        args = [sys.executable, "-m", "tts_client", "--broker", client_endpoint(cfg.frontend), "--log-level",
                cfg.log_level, "gateway", "--listen", cfg.gateway, "--ready-file", str(ready)]
        env: dict[str, str] = {}
        if not _configured("TTS_GATEWAY_MODELS"):
            # One engine serves everything here, so both OpenAI model names go to it.
            env["TTS_GATEWAY_MODELS"] = f"tts-1={cfg.engine},tts-1-hd={cfg.engine}"
        self.gateway = self._spawn(args, env)
        return _await_ready_file(self.gateway, "gateway", ready, timeout_s)

    def start_workers(self) -> None:
        cfg = self.config
        args = [sys.executable, "-m", "tts_worker", "--broker", client_endpoint(cfg.backend), "--engine", cfg.engine,
                "--concurrency", str(cfg.workers), "--log-level", cfg.log_level]
        if cfg.device:
            args += ["--device", cfg.device]
        for opt in cfg.engine_opts:
            args += ["--engine-opt", opt]
        self.worker = self._spawn(args)

    def children(self) -> list[tuple[str, subprocess.Popen]]:
        named = (("broker", self.broker), ("workers", self.worker), ("gateway", self.gateway))
        return [(name, p) for name, p in named if p is not None]

    def exited(self) -> Optional[tuple[str, int]]:
        """The first child that has exited, with its code."""
        for name, proc in self.children():
            code = proc.poll()
            if code is not None:
                return name, code
        return None

    def stop(self, on_step: Callable[[str], None] = lambda _msg: None) -> None:
        """Stop the gateway (its requests finish), drain the broker, stop the workers; kill what lingers."""
        if self.gateway is not None and self.gateway.poll() is None:
            on_step("stopping the gateway")
            _terminate(self.gateway, 40)
        if self.broker is not None and self.broker.poll() is None:
            on_step(f"draining the broker (up to {self.config.drain_grace_s:.0f}s for running jobs)")
            _terminate(self.broker, self.config.drain_grace_s + 10)
        if self.worker is not None and self.worker.poll() is None:
            on_step("stopping the workers")
            _terminate(self.worker, 20)
        self._tmp.cleanup()


def _configured(name: str) -> bool:
    """Whether the environment or ./.env sets `name` (then a child reads it and we leave it alone)."""
    if name in os.environ:
        return True
    try:
        text = Path(".env").read_text(encoding="utf-8")
    except OSError:
        return False
    return any(line.strip().startswith(f"{name}=") for line in text.splitlines())


_BROKER_EXIT_BIND = 3
"""tts-broker's exit code for "cannot bind" (tts_broker.statedir.EXIT_BIND; the client does not import it)."""


def _await_ready_file(proc: subprocess.Popen, name: str, ready: Path, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the {name} exited with code {proc.returncode} while starting")
        try:
            return json.loads(ready.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            time.sleep(0.05)  # the ready file is the only signal it gives; poll it briefly
    raise RuntimeError(f"the {name} did not become ready within {timeout_s:.0f}s")


def _terminate(proc: subprocess.Popen, grace_s: float) -> None:
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        log.warning("process %d ignored SIGTERM for %.0fs; killing its process group", proc.pid, grace_s)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()


class StopSignal:
    """SIGINT/SIGTERM turned into an Event the foreground loop waits on."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.received: Optional[int] = None

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: object) -> None:
        self.received = signum
        self.event.set()
