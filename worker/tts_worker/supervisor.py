"""Run N worker processes and keep them running.

Each child is `python -m tts_worker --single --supervised ...` with the same settings and a name NAME/i.
A crashed child is restarted after a backoff (1 s doubling to 30 s, reset once a child stayed up a minute);
a child that left to be recycled (max_jobs / max_rss_mb) is restarted at once; a child that cannot load its
engine stops everything (restarting would only fail again). SIGTERM/SIGINT are forwarded to the children and
the supervisor exits when all of them have.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Optional

from tts_worker.exit_codes import ExitCode
from tts_worker.settings import WorkerSettings

log = logging.getLogger(__name__)

BACKOFF_MIN_S = 1.0
BACKOFF_MAX_S = 30.0
HEALTHY_AFTER_S = 60.0
TICK_S = 0.1
_PR_SET_PDEATHSIG = 1


@dataclasses.dataclass(slots=True)
class Child:
    """One worker slot and the process currently filling it."""

    index: int
    name: str
    proc: Optional[subprocess.Popen[bytes]] = None
    started_at: float = 0.0
    restart_at: float = 0.0
    backoff_s: float = BACKOFF_MIN_S
    restarts: int = 0


def child_command(settings: WorkerSettings, options: Mapping[str, Any], name: str, error_file: Path) -> list[str]:
    """The command line of one child: every resolved setting spelled out, so env changes cannot diverge."""
    args = [
        sys.executable, "-m", "tts_worker", "--single", "--supervised",
        "--broker", settings.broker_url, "--engine", settings.engine, "--device", settings.device,
        "--name", name, "--log-level", settings.log_level, "--model-version", settings.model_version,
        "--semantic-token-cache" if settings.semantic_token_cache else "--no-semantic-token-cache",
        "--heartbeat-interval-s", repr(settings.heartbeat_interval_s),
        "--heartbeat-liveness", str(settings.heartbeat_liveness),
        "--cancel-grace-s", repr(settings.cancel_grace_s),
        "--max-jobs", str(settings.max_jobs), "--max-rss-mb", str(settings.max_rss_mb),
        "--load-error-file", str(error_file),
    ]
    if settings.curve_secret and settings.broker_key:
        args += ["--curve-secret", settings.curve_secret, "--broker-key", settings.broker_key]
    if settings.log_json:
        args.append("--log-json")
    for key, value in options.items():
        args += ["--engine-opt", f"{key}={_option_text(value)}"]
    return args


def _option_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the supervisor dies (even by SIGKILL)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: orphans are possible if the supervisor is killed with -9


class Supervisor:
    """Keeps `settings.concurrency` worker processes alive."""

    def __init__(self, settings: WorkerSettings, options: Mapping[str, Any]) -> None:
        self.settings = settings
        self.options = dict(options)
        self.children = [Child(i, f"{settings.name}/{i}") for i in range(settings.concurrency)]
        self._signals = 0
        self._forwarded = 0
        self._fatal: Optional[ExitCode] = None
        self._tmp = tempfile.TemporaryDirectory(prefix="tts-worker-")

    def _error_file(self, child: Child) -> Path:
        return Path(self._tmp.name) / f"load-error-{child.index}.txt"

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        log.info("supervisor %d: starting %d worker process(es) for engine %s", os.getpid(), len(self.children),
                 self.settings.engine)
        try:
            while True:
                stopping = self._signals > 0 or self._fatal is not None
                if stopping and self._forwarded < max(1, self._signals):
                    self._forward(signal.SIGTERM)
                now = time.monotonic()
                for child in self.children:
                    if child.proc is not None:
                        code = child.proc.poll()
                        if code is not None:
                            self._on_exit(child, code, now)
                    elif not stopping and now >= child.restart_at:
                        self._spawn(child)
                if (self._signals or self._fatal is not None) and all(c.proc is None for c in self.children):
                    break
                time.sleep(TICK_S)
        finally:
            self._kill_all()
            self._tmp.cleanup()
        code = self._fatal if self._fatal is not None else ExitCode.OK
        log.info("supervisor %d: all worker processes exited; exit code %d", os.getpid(), int(code))
        return int(code)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signals += 1

    def _forward(self, signum: int) -> None:
        self._forwarded = max(1, self._signals)
        for child in self.children:
            if child.proc is not None and child.proc.poll() is None:
                try:
                    child.proc.send_signal(signum)
                except ProcessLookupError:
                    pass
        log.info("supervisor %d: asked the worker processes to stop", os.getpid())

    def _spawn(self, child: Child) -> None:
        error_file = self._error_file(child)
        error_file.unlink(missing_ok=True)
        command = child_command(self.settings, self.options, child.name, error_file)
        child.proc = subprocess.Popen(command, preexec_fn=_die_with_parent)
        child.started_at = time.monotonic()
        log.info("supervisor %d: started worker %s (pid %d)", os.getpid(), child.name, child.proc.pid)

    def _on_exit(self, child: Child, code: int, now: float) -> None:
        pid = child.proc.pid if child.proc is not None else 0
        child.proc = None
        how = f"signal {-code}" if code < 0 else f"code {code}"
        if self._signals or self._fatal is not None:
            log.info("supervisor %d: worker %s (pid %d) exited with %s", os.getpid(), child.name, pid, how)
            return
        if code in (ExitCode.LOAD_FAILED, ExitCode.USAGE):
            message = self._read_error(child) or "see the worker's log above"
            log.error("supervisor %d: worker %s could not start its engine %s: %s; not restarting",
                      os.getpid(), child.name, self.settings.engine, message)
            self._fatal = ExitCode(code)
            return
        child.restarts += 1
        if code == ExitCode.RECYCLE:
            log.info("supervisor %d: worker %s (pid %d) left to be recycled; starting a fresh one",
                     os.getpid(), child.name, pid)
            child.restart_at = now
            return
        if now - child.started_at >= HEALTHY_AFTER_S:
            child.backoff_s = BACKOFF_MIN_S
        child.restart_at = now + child.backoff_s
        log.warning("supervisor %d: worker %s (pid %d) exited with %s; restarting in %.0f s", os.getpid(),
                    child.name, pid, how, child.backoff_s)
        child.backoff_s = min(child.backoff_s * 2, BACKOFF_MAX_S)

    def _read_error(self, child: Child) -> str:
        try:
            return self._error_file(child).read_text(encoding="utf-8").strip()
        except OSError:
            return ""

    def _kill_all(self) -> None:
        """Last resort on the way out (an exception in the loop): no child may outlive the supervisor."""
        for child in self.children:
            if child.proc is not None and child.proc.poll() is None:
                child.proc.kill()
                child.proc.wait(5)
