"""`tts up`: a broker and workers as children of one foreground command, stopped cleanly on a signal."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Callable

import psutil
import pytest

from tts_client import TtsClient

from harness import Proc, registered_workers, tone_frames, wait_for

pytestmark = pytest.mark.timeout(120)


def start_up(procs: list[Proc], tmp_path: Path, workers: int = 2) -> tuple[Proc, str]:
    # IPC endpoints in the test's own folder: unique without picking a TCP port before the broker binds it
    # (`tts up` hands its --backend to the workers as given, so it cannot bind port `*` yet).
    frontend, backend = f"ipc://{tmp_path / 'front.ipc'}", f"ipc://{tmp_path / 'back.ipc'}"
    args = [sys.executable, "-m", "tts_client", "up", "--workers", str(workers), "--engine", "tone",
            "--frontend", frontend, "--backend", backend, "--drain-grace-s", "2",
            "--broker-opt", f"state-dir={tmp_path / 'state'}", "--child-log-level", "DEBUG"]
    proc = Proc(args, tmp_path / "up.log")
    procs.append(proc)
    return proc, frontend


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def all_gone(processes: list[psutil.Process]) -> bool:
    for p in processes:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            continue
    return True


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_up_serves_jobs_and_stops_everything_on_a_signal(procs: list[Proc], tmp_path: Path,
                                                         make_client: Callable[..., TtsClient], sig: int) -> None:
    up, frontend = start_up(procs, tmp_path)
    client = make_client(frontend)
    wait_for(lambda: registered_workers(client) == 2 or not up.alive(), 60, what="2 workers via tts up")
    wait_for(lambda: "2 worker(s) ready" in up.log() or not up.alive(), 10, what="ready message")
    assert up.alive(), up.log()
    assert f"clients {frontend}" in up.log()
    assert client.synthesize("Through tts up.").num_frames == tone_frames("Through tts up.")
    children = descendants(up.pid)
    assert len(children) >= 4  # broker, worker supervisor, 2 workers
    up.signal(sig)
    assert up.popen.wait(60) == 0, up.log()
    wait_for(lambda: all_gone(children), 10, what="every child process gone")
    assert "stopped" in up.log()


def test_up_stops_the_workers_when_the_broker_dies(procs: list[Proc], tmp_path: Path,
                                                   make_client: Callable[..., TtsClient]) -> None:
    up, frontend = start_up(procs, tmp_path, workers=1)
    client = make_client(frontend)
    wait_for(lambda: registered_workers(client) == 1 or not up.alive(), 60, what="worker via tts up")
    children = descendants(up.pid)
    broker = next(p for p in children if "tts_broker" in " ".join(p.cmdline()))
    os.kill(broker.pid, signal.SIGKILL)
    assert up.popen.wait(60) == 1, up.log()
    assert "the broker exited" in up.log()
    wait_for(lambda: all_gone(children), 10, what="every child process gone")
