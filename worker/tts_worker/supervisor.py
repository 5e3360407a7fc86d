"""Run N worker processes and keep them running.

Each child is `python -m tts_worker --single --supervised ...` with the same settings and a name NAME/i.
A crashed child is restarted after a backoff (1 s doubling to 30 s, reset once a child stayed up a minute);
a child that left to be recycled (max_jobs / max_rss_mb) is restarted at once; a child that cannot load its
engine stops everything (restarting would only fail again). SIGTERM/SIGINT are forwarded to the children and
the supervisor exits when all of them have.

With `--min N --max M` (settings.min_workers / max_workers) the number of processes follows the broker's
queue instead (autoscale.py has the policy): the supervisor polls BROKER_STATUS on the broker's frontend
(`--broker-frontend`, or derived from `--broker`, see broker_probe.derive_frontend), starts processes while
jobs wait, limited by free memory and a per-worker estimate, and retires idle ones by asking the broker to
drain them (DRAIN_WORKER), so a job in hand is always finished. Each decision is logged and written to a small
status file that the children put in their heartbeat (`supervisor` in the worker view, a line in `tts status`).
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
import time
from pathlib import Path
from typing import Any, Mapping, Optional

import psutil

from tts_worker.autoscale import Autoscaler, Decision, Observation, ScalePolicy
from tts_worker.broker_probe import BrokerProbe, derive_frontend
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
    retiring: bool = False  # autoscale: asked to leave; not restarted
    retired: bool = False  # left for good (drained or retired): the slot is removed


def child_command(settings: WorkerSettings, options: Mapping[str, Any], name: str, error_file: Path,
                  status_file: Optional[Path] = None) -> list[str]:
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
    if status_file is not None:
        args += ["--supervisor-status-file", str(status_file)]
    for flag, path in (("--health-file", settings.health_file), ("--ready-file", settings.ready_file)):
        if path:  # one file per child: NAME/i -> FILE.i
            args += [flag, f"{path}.{name.rsplit('/', 1)[-1]}"]
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
    """Keeps `settings.concurrency` worker processes alive, or between min and max of them (autoscale)."""

    def __init__(self, settings: WorkerSettings, options: Mapping[str, Any]) -> None:
        self.settings = settings
        self.options = dict(options)
        self._signals = 0
        self._forwarded = 0
        self._fatal: Optional[ExitCode] = None
        self._tmp = tempfile.TemporaryDirectory(prefix="tts-worker-")
        self.autoscaler: Optional[Autoscaler] = None
        self.probe: Optional[BrokerProbe] = None
        self._next_index = 0
        self._next_scale = 0.0
        self._last_decision = ""
        self._status_file: Optional[Path] = None
        if settings.autoscale:
            self.autoscaler = Autoscaler(ScalePolicy(
                min_workers=settings.min_workers or 0, max_workers=settings.max_workers or 1,
                scale_up_wait_s=settings.scale_up_wait_s, scale_down_idle_s=settings.scale_down_idle_s,
                memory_reserve_bytes=settings.memory_reserve_mb * 1024 * 1024,
                worker_memory_bytes=settings.worker_memory_mb * 1024 * 1024,
            ))
            frontend = settings.broker_frontend or derive_frontend(settings.broker_url)
            if frontend is None:
                raise ValueError(f"cannot derive the broker's frontend from {settings.broker_url}; "
                                 "give --broker-frontend")
            self.probe = BrokerProbe(frontend, timeout_s=max(1.0, settings.scale_interval_s * 2))
            self._status_file = Path(self._tmp.name) / "supervisor.json"
            self.children: list[Child] = []
            self._write_status(0, "starting")
        else:
            self.children = [Child(i, f"{settings.name}/{i}") for i in range(settings.concurrency)]
            self._next_index = settings.concurrency

    def _error_file(self, child: Child) -> Path:
        return Path(self._tmp.name) / f"load-error-{child.index}.txt"

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        if self.autoscaler is not None:
            policy = self.autoscaler.policy
            log.info("supervisor %d: autoscaling %d..%d worker process(es) for engine %s on the queue of %s",
                     os.getpid(), policy.min_workers, policy.max_workers, self.settings.engine,
                     self.probe.endpoint if self.probe else "?")
        else:
            log.info("supervisor %d: starting %d worker process(es) for engine %s", os.getpid(),
                     len(self.children), self.settings.engine)
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
                    elif not stopping and now >= child.restart_at and not child.retired:
                        self._spawn(child)
                self.children = [c for c in self.children if not c.retired]
                if (self._signals or self._fatal is not None) and all(c.proc is None for c in self.children):
                    break
                if not stopping and not self.children and self.autoscaler is None:
                    log.info("supervisor %d: every worker process was drained", os.getpid())
                    break
                if not stopping and self.autoscaler is not None and now >= self._next_scale:
                    self._next_scale = now + self.settings.scale_interval_s
                    self._autoscale(now)
                time.sleep(TICK_S)
        finally:
            self._kill_all()
            if self.probe is not None:
                self.probe.close()
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

    # ---- autoscaling -----------------------------------------------------------------------------

    def _autoscale(self, now: float) -> None:
        assert self.autoscaler is not None and self.probe is not None
        status = self.probe.status(worker_prefix=f"{self.settings.name}/")
        mine = {c.name for c in self.children}
        views = [w for w in status.workers if w.name in mine] if status is not None else []
        idle = sum(max(0, w.capacity - w.busy) for w in views if w.state == "idle")
        busy = sum(w.busy for w in views)
        seen = Observation(
            now=now, processes=sum(1 for c in self.children if not c.retiring),
            queue_depth=int(status.queue.get("depth", 0)) if status is not None else None,
            idle_slots=idle, busy_slots=busy, available_bytes=int(psutil.virtual_memory().available),
            measured_rss_bytes=self._measured_rss(),
            starting=sum(1 for c in self.children if not c.retiring and c.name not in {w.name for w in views}),
        )
        decision = self.autoscaler.decide(seen)
        if decision.delta > 0:
            for _ in range(decision.delta):
                child = Child(self._next_index, f"{self.settings.name}/{self._next_index}")
                self._next_index += 1
                self.children.append(child)
                self._spawn(child)
        elif decision.delta < 0:
            idle_names = [w.name for w in views if w.state == "idle" and w.busy == 0]
            candidates = [c for c in reversed(self.children) if c.name in idle_names and not c.retiring]
            for child in candidates[:-decision.delta]:
                self._retire(child)
        self._record(decision, seen)

    def _retire(self, child: Child) -> None:
        """Take an idle worker away without losing a job: the broker drains it (it exits DRAINED);
        if the broker does not know it, SIGTERM (which also finishes the job in hand)."""
        child.retiring = True
        assert self.probe is not None
        if not self.probe.drain(child.name) and child.proc is not None and child.proc.poll() is None:
            child.proc.send_signal(signal.SIGTERM)

    def _measured_rss(self) -> int:
        largest = 0
        for child in self.children:
            if child.proc is None:
                continue
            try:
                largest = max(largest, int(psutil.Process(child.proc.pid).memory_info().rss))
            except psutil.Error:
                continue
        return largest

    def _record(self, decision: Decision, seen: Observation) -> None:
        running = sum(1 for c in self.children if not c.retiring)
        if decision.delta:
            log.info("supervisor %d: scale %+d -> %d worker process(es): %s (free memory %d MiB)", os.getpid(),
                     decision.delta, running, decision.reason, seen.available_bytes // (1024 * 1024))
            self._last_decision = f"{decision.delta:+d}: {decision.reason}"
        elif self.autoscaler is not None and self.autoscaler.memory_limited and decision.reason != self._last_decision:
            log.warning("supervisor %d: %s", os.getpid(), decision.reason)
            self._last_decision = decision.reason
        self._write_status(running, self._last_decision or decision.reason)

    def _write_status(self, running: int, last: str) -> None:
        """What the children put under `supervisor` in their heartbeat; written atomically."""
        if self._status_file is None or self.autoscaler is None:
            return
        policy = self.autoscaler.policy
        data = {"pid": os.getpid(), "workers": running, "target": running, "min": policy.min_workers,
                "max": policy.max_workers, "last": last[:200]}
        tmp = self._status_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, self._status_file)

    # ---- processes ---------------------------------------------------------------------------------

    def _spawn(self, child: Child) -> None:
        error_file = self._error_file(child)
        error_file.unlink(missing_ok=True)
        command = child_command(self.settings, self.options, child.name, error_file, self._status_file)
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
        if code == ExitCode.DRAINED or child.retiring:
            log.info("supervisor %d: worker %s (pid %d) %s; not restarting", os.getpid(), child.name, pid,
                     "retired" if child.retiring else "was drained by the broker")
            child.retired = True
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
