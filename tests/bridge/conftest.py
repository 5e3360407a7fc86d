"""Fixtures of the bridges' tests: the session's throwaway redis-server and RabbitMQ node (started once, at
first use), the Node BullMQ producer's packages, a broker with tone workers, bridge processes.

The servers come from Debian's packages, installed by scripts/install-queue-servers.sh when missing; the
system services are never used (nor left running by the install).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pytest

from bridgekit import NODE_DIR, RabbitServer, RedisServer, ensure_installed
from harness import BrokerProc, Proc, wait_for


def _session_server(key: str, make: Callable[[Path], Any]) -> Iterator[Any]:
    ensure_installed()
    folder = Path(tempfile.mkdtemp(prefix=f"tts-{key}-"))
    server = make(folder)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One throwaway redis-server for the session (tests use their own stream and queue names)."""
    yield from _session_server("redis", RedisServer)


@pytest.fixture(scope="session")
def rabbitmq_server() -> Iterator[RabbitServer]:
    """One throwaway RabbitMQ node for the session (slow to start: ~10 s)."""
    yield from _session_server("rabbitmq", RabbitServer)


@pytest.fixture(scope="session")
def bullmq_node() -> Path:
    """tests/bridge/node with its node_modules (the `bullmq` npm package, from package-lock.json)."""
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is needed for the BullMQ producer (tests/bridge/node)")
    lock = NODE_DIR / "package-lock.json"
    stamp = NODE_DIR / "node_modules" / ".tts-lock"
    if not stamp.exists() or stamp.read_text() != lock.read_text():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--silent"], cwd=NODE_DIR, check=True, timeout=600)
        stamp.write_text(lock.read_text())
    return NODE_DIR


@pytest.fixture
def stack(broker_factory: Callable[..., BrokerProc], start_worker: Callable[..., Proc]) -> BrokerProc:
    """A broker and two tone workers (capacity 4 each), both registered."""
    from tts_client import TtsClient

    broker = broker_factory()
    for _ in range(2):
        start_worker(broker, opts={"capacity": 4})
    with TtsClient(broker.frontend, request_timeout_s=2) as client:
        wait_for(lambda: len(client.broker_status().workers) == 2, 30, interval_s=0.1, what="2 tone workers")
    return broker


@pytest.fixture
def start_bridge(tmp_path: Path, procs: list[Proc]) -> Callable[..., Proc]:
    """start_bridge(broker, "redis-streams", "--redis", url, ...) -> the `tts bridge` process, consuming."""
    counter = [0]

    def start(broker: BrokerProc, kind: str, *args: str, output_dir: Optional[Path] = None) -> Proc:
        counter[0] += 1
        ready = tmp_path / f"bridge-ready-{counter[0]}.json"
        out = output_dir or tmp_path / "audio"
        cmd = [sys.executable, "-m", "tts_client", "--broker", broker.frontend, "--log-level", "INFO", "bridge", kind,
               "--output-dir", str(out), "--ready-file", str(ready), "--status-interval-s", "2",
               "--metrics-listen", "127.0.0.1:0", *args]
        proc = Proc(cmd, tmp_path / f"bridge-{counter[0]}.log")
        procs.append(proc)
        wait_for(lambda: ready.exists() or not proc.alive(), 30, what="bridge ready file")
        if not proc.alive():
            raise AssertionError(f"bridge exited at start:\n{proc.log()}")
        proc.ready = json.loads(ready.read_text())  # type: ignore[attr-defined]
        return proc

    return start


