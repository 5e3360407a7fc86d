"""The dashboard in a real headless browser: Debian's chromium driven by playwright-core (dashboard_probe.mjs).

scripts/test-dashboard.sh (run by `make test-extra`) installs both; without them this test skips and says
what is missing. The page must load from the broker alone (no other origin), list the live workers, and show
a job count that rises while a batch runs. Screenshots are saved in the test's temp folder.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any, Callable

import pytest

from tts_client import TtsClient

from harness import ROOT, BrokerProc, Proc, wait_for

PREFIX = ROOT / ".cache" / "playwright"
PROBE = Path(__file__).with_name("dashboard_probe.mjs")
CHROMIUM = Path("/usr/bin/chromium")
WORKERS = 2
BATCH = 40

pytestmark = pytest.mark.timeout(180)


def _missing() -> str:
    if not CHROMIUM.exists():
        return "Debian's chromium (/usr/bin/chromium) is not installed: run scripts/test-dashboard.sh as root"
    if shutil.which("node") is None:
        return "node is not installed"
    if not (PREFIX / "node_modules" / "playwright-core" / "package.json").exists():
        return f"playwright-core is not installed in {PREFIX}: run scripts/test-dashboard.sh"
    return ""


def test_dashboard_shows_live_workers_and_a_rising_job_count(
        broker_factory: Callable[..., BrokerProc], start_worker: Callable[..., Proc], tmp_path: Path) -> None:
    missing = _missing()
    if missing:
        pytest.skip(missing)
    broker = broker_factory("--http", "127.0.0.1:0")
    assert broker.http is not None
    for _ in range(WORKERS):
        start_worker(broker, opts={"latency_s": 0.1})
    with TtsClient(broker.frontend) as client:
        wait_for(lambda: len(client.broker_status().workers) == WORKERS, 30, what="workers registered")
        probe = subprocess.Popen(["node", str(PROBE), str(PREFIX), broker.http, str(WORKERS), str(BATCH),
                                  str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        events: list[dict[str, Any]] = []
        batch: list[threading.Thread] = []
        try:
            assert probe.stdout is not None
            for line in probe.stdout:
                event = json.loads(line)
                events.append(event)
                if event["event"] == "workers":
                    runner = threading.Thread(target=lambda: [h.result() for h in
                                                              [client.submit(f"line {i}") for i in range(BATCH)]])
                    runner.start()
                    batch.append(runner)
                if event["event"] == "done":
                    break
            probe.wait(30)
        finally:
            if probe.poll() is None:
                probe.kill()
                probe.wait()
            for runner in batch:
                runner.join(60)
        stderr = probe.stderr.read() if probe.stderr else ""
        assert probe.returncode == 0, f"probe failed ({probe.returncode}):\n{stderr}"
        status = client.broker_status()

    shown = next(e for e in events if e["event"] == "workers")
    assert sorted(shown["ids"]) == sorted(w.worker_id for w in status.workers)
    assert all(state.startswith(("idle", "busy")) for state in shown["states"])
    assert all(m.endswith("MiB") for m in shown["memory"]), shown["memory"]  # RSS from the heartbeats
    assert shown["conn"] == "live"
    assert shown["done"] == 0
    final = next(e for e in events if e["event"] == "done")
    seen = final["seen"]
    assert seen[-1] == BATCH
    assert seen == sorted(seen) and len(set(seen)) >= 3, f"the count did not rise step by step: {seen}"
    assert final["errors"] == [], final["errors"]  # no script errors, nothing fetched from another origin
    assert final["recentRows"] > 0
    for shot in final["screenshots"]:
        assert Path(shot).stat().st_size > 10_000
    print("screenshots:", *final["screenshots"])
