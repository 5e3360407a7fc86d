"""`tts up 2>&1 | tee log`, then Ctrl-C: the whole pipeline gets SIGINT, tee dies first, and the broker and
workers must still be stopped (no orphan), although every note `tts up` writes then hits a broken pipe."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from harness import wait_for

pytestmark = pytest.mark.timeout(120)


def test_ctrl_c_of_tts_up_piped_into_tee_stops_the_broker_and_workers(tmp_path: Path) -> None:
    log = tmp_path / "tee.log"
    frontend, backend = f"ipc://{tmp_path / 'front.ipc'}", f"ipc://{tmp_path / 'back.ipc'}"
    up = [sys.executable, "-m", "tts_client", "up", "--workers", "1", "--engine", "tone", "--frontend", frontend,
          "--backend", backend, "--drain-grace-s", "2", "--broker-opt", f"state-dir={tmp_path / 'state'}"]
    # A shell pipeline in its own process group, like a terminal's foreground job.
    rc = tmp_path / "up.rc"
    script = (f"trap '' INT; {shlex.join(up)} 2>&1 | tee {shlex.quote(str(log))} >/dev/null; "
              f"echo ${{PIPESTATUS[0]}} > {shlex.quote(str(rc))}")
    shell = subprocess.Popen(["bash", "-c", script], start_new_session=True)
    pgid = shell.pid
    try:
        wait_for(lambda: log.exists() and "worker(s) ready" in log.read_text(), 60, what="tts up ready")
        family = psutil.Process(shell.pid).children(recursive=True)
        names = [" ".join(p.cmdline()) for p in family]
        assert any("tts_broker" in n for n in names) and any("tts_worker" in n for n in names), names
        # Ctrl-C: SIGINT to the foreground process group (tee and tts up; the children have their own sessions).
        # tee goes first, so `tts up` then writes its "stopping" notes into a closed pipe.
        tee = [p for p in family if p.name() == "tee"]
        for p in tee:
            p.kill()  # the shell ignores SIGINT here (to report tts up's exit code), so tee is stopped directly
        psutil.wait_procs(tee, timeout=10)
        os.killpg(pgid, signal.SIGINT)
        gone, alive = psutil.wait_procs(family, timeout=60)
        assert not alive, f"still running after Ctrl-C: {[' '.join(p.cmdline()) for p in alive]}"
        shell.wait(10)
        # `tts up` stopped its children itself (drain, then workers) and exited 0, instead of dying on EPIPE
        # with a traceback and leaving them to PR_SET_PDEATHSIG (or, where that is missing, orphaned).
        assert rc.read_text().strip() == "0"
    finally:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for p in psutil.Process().children(recursive=True):
            if "tts_broker" in " ".join(p.cmdline()) or "tts_worker" in " ".join(p.cmdline()):
                p.kill()
