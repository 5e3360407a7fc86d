"""benchkit: what the benchmarks share. Child processes, a broker and workers on loopback, waiting, percentiles.

Every benchmark runs the real programs (`python -m tts_broker`, `python -m tts_worker`, ...) as child
processes of the interpreter that runs it, each in a session of its own so that stopping one also stops a
worker supervisor's children. A broker binds free ports (`tcp://127.0.0.1:*`) and names them in its ready
file, which `Stack.start_broker` waits for. Standard library only: bench_fish_batch.py runs in the Fish venv.

Percentiles are nearest-rank: `percentile(values, 0.9)` is the smallest value with at least 90 % of the
values at or below it (p50 of 1..100 is 50, p90 of 16 values is the 15th). Medians are statistics.median.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any, Callable, Mapping, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
ANY_PORT = "tcp://127.0.0.1:*"


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile `q` (0 < q <= 1) of `values`; nan when there are none."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = math.ceil(q * len(ordered) - 1e-9)  # 0.07 x 100 is 7.000000000000001 in floating point
    return ordered[min(len(ordered), max(1, rank)) - 1]


def wait_until(what: str, check: Callable[[], object], timeout_s: float = 60.0, every_s: float = 0.05) -> None:
    """Call `check` every `every_s` until it returns something true; SystemExit after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(every_s)


def wait_file(path: Path, proc: subprocess.Popen[bytes], what: str, timeout_s: float = 60.0,
              every_s: float = 0.05) -> dict[str, Any]:
    """The JSON of a ready file once `proc` has written it; SystemExit if `proc` exits or `timeout_s` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with code {proc.returncode}")
        try:
            return dict(json.loads(path.read_text()))
        except (FileNotFoundError, json.JSONDecodeError):
            time.sleep(every_s)
    raise SystemExit(f"{what} did not become ready in {timeout_s:.0f}s")


def broker_command(ready_file: Path, state_dir: Path, *, frontend: str = ANY_PORT, backend: str = ANY_PORT,
                   journal: bool = False, cache: bool = False, log_level: str = "warning",
                   extra: Sequence[str] = ()) -> list[str]:
    """`python -m tts_broker ...` on the given endpoints (default: free ports), its state in `state_dir`."""
    return [sys.executable, "-m", "tts_broker", "--frontend", frontend, "--backend", backend, "--state-dir",
            str(state_dir), "--ready-file", str(ready_file), "--log-level", log_level,
            *([] if journal else ["--no-journal"]), *([] if cache else ["--no-cache"]), *extra]


def worker_command(backend: str, engine: str, *, concurrency: Optional[int] = None, single: bool = False,
                   name: Optional[str] = None, opts: Optional[Mapping[str, object]] = None,
                   log_level: str = "WARNING") -> list[str]:
    """`python -m tts_worker ...`: a supervisor of `concurrency` engine processes, or one process (`single`)."""
    args = [sys.executable, "-m", "tts_worker", "--broker", backend, "--engine", engine]
    if concurrency is not None:
        args += ["--concurrency", str(concurrency)]
    if single:
        args.append("--single")
    if name is not None:
        args += ["--name", name]
    for key, value in (opts or {}).items():
        args += ["--engine-opt", f"{key}={value}"]
    return [*args, "--log-level", log_level]


def wait_workers(client: Any, n: int, *, timeout_s: float = 60.0, proc: Optional[subprocess.Popen[bytes]] = None,
                 match: Callable[[Any], bool] = lambda _worker: True, every_s: float = 0.05) -> None:
    """Until the broker lists at least `n` workers that `match` (a tts_client TtsClient asks it)."""
    deadline = time.monotonic() + timeout_s
    while sum(1 for w in client.broker_status(timeout_s=5).workers if match(w)) < n:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the worker exited with code {proc.returncode} before it registered")
        if time.monotonic() > deadline:
            raise SystemExit(f"{n} workers did not register in {timeout_s:.0f}s")
        time.sleep(every_s)


class Processes:
    """A benchmark's child processes: each in its own session, its output appended to a log file."""

    def __init__(self, log: Path, *, env: Optional[Mapping[str, str]] = None, cwd: Optional[Path] = None) -> None:
        self.log_path = log
        self.env = None if env is None else dict(env)
        self.cwd = cwd
        self.procs: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []

    def spawn(self, args: Sequence[str], *, log: Optional[Path] = None,
              preexec_fn: Optional[Callable[[], None]] = None) -> subprocess.Popen[bytes]:
        """Start `args` (a full command line) with its output in `log` (default: the shared log)."""
        out = open(log or self.log_path, "ab")
        self._logs.append(out)
        proc = subprocess.Popen(list(args), stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd,
                                start_new_session=True, preexec_fn=preexec_fn)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace_s: float = 30.0) -> None:
        """SIGTERM (a broker drains, a supervisor stops its workers); after `grace_s`, SIGKILL the session."""
        if proc.poll() is None:
            if grace_s > 0:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(grace_s)
                except subprocess.TimeoutExpired:
                    pass
        self._kill_session(proc)
        proc.wait()

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL at once, with everything it started."""
        self.stop(proc, grace_s=0)

    def close(self, grace_s: float = 30.0) -> None:
        """Stop every process, the last started first (workers before their broker). Idempotent."""
        for proc in reversed(self.procs):
            self.stop(proc, grace_s)
        for out in self._logs:
            out.close()
        self._logs.clear()

    def _kill_session(self, proc: subprocess.Popen[bytes]) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # start_new_session: its pid is its group's id
        except (ProcessLookupError, PermissionError):
            pass  # the group is gone already


class Stack:
    """A broker on free loopback ports and what a benchmark starts beside it, as child processes of one run.

    `frontend`/`backend` are the broker's endpoints once start_broker() returned; a second start_broker()
    (after the first was killed) binds the same ones again, as a restarted broker does.
    """

    def __init__(self, tmp: Path, *, env: Optional[Mapping[str, str]] = None, cwd: Optional[Path] = None,
                 log_name: str = "stack.log") -> None:
        self.tmp = tmp
        self.procs = Processes(tmp / log_name, env=env, cwd=cwd)
        self.frontend = self.backend = ANY_PORT
        self.broker: Optional[subprocess.Popen[bytes]] = None

    def start_broker(self, *, timeout_s: float = 60.0, every_s: float = 0.05, **options: Any) -> dict[str, Any]:
        """Start the broker (broker_command's `options`; by default no journal, no result cache, state in
        tmp/state) and wait for its ready file; returns the file's JSON (`broker_id`, `http` if asked, ...)."""
        ready = self.tmp / f"broker-ready-{time.monotonic_ns()}.json"  # each start its own
        options.setdefault("frontend", self.frontend)
        options.setdefault("backend", self.backend)
        self.broker = self.spawn(broker_command(ready, options.pop("state_dir", self.tmp / "state"), **options))
        info = wait_file(ready, self.broker, "broker", timeout_s, every_s)
        self.frontend, self.backend = info["frontend"], info["backend"]
        return info

    def start_worker(self, engine: str, *, log: Optional[Path] = None, **options: Any) -> subprocess.Popen[bytes]:
        """`tts-worker --engine ENGINE` on this broker's backend (worker_command's `options`)."""
        return self.spawn(worker_command(self.backend, engine, **options), log=log)

    def spawn(self, args: Sequence[str], *, log: Optional[Path] = None) -> subprocess.Popen[bytes]:
        return self.procs.spawn(args, log=log)

    def stop(self, proc: subprocess.Popen[bytes], grace_s: float = 30.0) -> None:
        self.procs.stop(proc, grace_s)

    def close(self, grace_s: float = 30.0) -> None:
        """Stop everything, workers before the broker; grace_s=0 kills at once."""
        self.procs.close(grace_s)
