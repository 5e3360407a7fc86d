"""`make demo` with its ports taken by someone else's broker fails, naming the holder, and synthesises nothing
through that broker (it used to talk to whatever answered there and report success)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harness import ROOT, BrokerProc

pytestmark = pytest.mark.timeout(150)


def test_make_demo_fails_when_another_broker_holds_its_ports(broker: BrokerProc, tone_workers,
                                                             tmp_path: Path) -> None:
    tone_workers(broker)  # a working stack that is not the demo's: the old demo reported success through it
    out = tmp_path / "out"
    run = subprocess.run(["make", "-s", "demo", "DEMO_ENGINE=tone", "DEMO_WORKERS=1", f"DEMO_OUTPUT={out}",
                          f"DEMO_FRONTEND={broker.frontend}", f"DEMO_BACKEND={broker.backend}", "DEMO_WAIT_S=60"],
                         cwd=str(ROOT), capture_output=True, text=True, timeout=140)
    said = run.stdout + run.stderr
    assert run.returncode != 0, said
    assert broker.proc is not None and f"held by pid {broker.proc.pid}" in said, said
    assert "cannot bind" in said and "Traceback" not in said
    assert not out.exists() or not list(out.iterdir())
