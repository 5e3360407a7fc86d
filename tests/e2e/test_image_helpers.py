"""The image test's helpers (scripts/images/): the host-network compose copy and the stop watch.

scripts/test-images.sh runs them against a real docker daemon (`make test`); these keep their rules honest
without one: the failover stack's postgres service on the locally built image and port, and which stops are
named as slow.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from deploykit import ROOT, load_script

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

IMAGES = ROOT / "scripts" / "images"
PORTS = {"5555": "41001", "5556": "41002", "8000": "41003", "9464": "41004", "5432": "41006"}


def load(name: str) -> ModuleType:
    return load_script(IMAGES / f"{name}.py", name)


def failover_copy(tmp_path: Path, *extra: str) -> dict[str, Any]:
    target = tmp_path / "failover.yaml"
    ports = [arg for old, new in PORTS.items() for arg in ("--port", f"{old}={new}")]
    subprocess.run([sys.executable, str(IMAGES / "hostnet_compose.py"), str(ROOT / "deploy/compose.failover.yaml"),
                    str(target), "--image", "tts-broker:cpu-test", *ports,
                    "--service-port", "broker-b:9464=41005", *extra], check=True, capture_output=True, text=True)
    data: dict[str, Any] = yaml.safe_load(target.read_text())
    return data


def test_failover_postgres_runs_the_local_image_on_its_host_port(tmp_path: Path) -> None:
    services = failover_copy(tmp_path, "--postgres-image", "tts-test-postgres:15")["services"]
    postgres = services["postgres"]
    assert postgres["image"] == "tts-test-postgres:15"
    assert postgres["network_mode"] == "host"
    assert postgres["environment"]["PGPORT"] == "41006"
    assert postgres["command"] == ["postgres", "-c", "listen_addresses=127.0.0.1"]
    # The rest of the service is the compose file's: the official image's variables, the volume, the check.
    assert postgres["environment"]["POSTGRES_USER"] == "broker"
    assert postgres["environment"]["POSTGRES_DB"] == "tts"
    assert postgres["volumes"] == ["journal:/var/lib/postgresql/data"]
    assert "pg_isready" in postgres["healthcheck"]["test"]
    for broker in ("broker-a", "broker-b"):
        url = services[broker]["environment"]["TTS_JOURNAL_URL"]
        assert url.startswith("postgresql://broker:") and url.endswith("@127.0.0.1:41006/tts"), url
        assert services[broker]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
        assert services[broker]["image"] == "tts-broker:cpu-test"
    assert "--http" in services["broker-b"]["command"] and "127.0.0.1:41005" in services["broker-b"]["command"]


def test_failover_postgres_needs_an_image_of_our_own(tmp_path: Path) -> None:
    with pytest.raises(subprocess.CalledProcessError) as failed:
        failover_copy(tmp_path)
    assert "--postgres-image" in failed.value.stderr


def kill(container: str, signal: str) -> dict[str, Any]:
    return {"Type": "container", "Action": "kill", "id": container,
            "Actor": {"ID": container, "Attributes": {"name": f"stack_{container}_1", "signal": signal}}}


def die(container: str) -> dict[str, Any]:
    return {"Type": "container", "Action": "die", "id": container,
            "Actor": {"ID": container, "Attributes": {"name": f"stack_{container}_1"}}}


def test_stop_watch_names_the_stops_still_going_after_the_wait() -> None:
    book = load("stop_watch").StopBook(after_s=10)
    for container in ("gateway", "worker", "broker"):
        assert book.on_event(kill(container, "15"), 100.0) is None
    assert book.on_event(die("gateway"), 101.0) is None  # a quick stop is not named
    assert book.slow(109.9) is None
    line = book.slow(110.0)
    assert line is not None
    assert "stack_broker_1 (SIGTERM, 10 s)" in line and "stack_worker_1" in line and "gateway" not in line
    assert book.slow(115.0) is None  # named once
    assert book.on_event(die("worker"), 112.0) == "stack_worker_1 stopped 12.0 s after its stop began (SIGTERM)"
    book.on_event(kill("broker", "9"), 131.0)
    assert book.on_event(die("broker"), 131.5) == (
        "stack_broker_1 stopped 31.5 s after its stop began (SIGTERM then SIGKILL)")
    assert book.stops == {}
