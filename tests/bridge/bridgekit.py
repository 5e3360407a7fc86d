"""Helpers of the bridges' tests and benchmark: throwaway Redis and RabbitMQ servers (on free loopback ports,
in temporary folders), the expected audio of a job. The fixtures that use them are in tests/bridge/conftest.py.

The servers come from Debian's packages, installed by scripts/install-queue-servers.sh when missing; the
system services are never used (nor left running by the install).

"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytest
import soundfile

from tts_worker.engines.tone import render_tone, sentence_duration_s, speaker_pitch_hz

from harness import ROOT, BrokerProc, free_port, wait_for

# Jobs per bridge test (the issue asks for 500; the suite's wall time at this size is in docs/bridges.md).
BRIDGE_JOBS = 500
NODE_DIR = Path(__file__).resolve().parent / "node"
INSTALL = ROOT / "scripts" / "install-queue-servers.sh"
RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def ensure_installed() -> None:
    result = subprocess.run(["bash", str(INSTALL)], capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        pytest.skip(f"redis-server/rabbitmq-server could not be installed: {result.stderr.strip()[-500:]}")


class _Server:
    """A server process in its own session, stopped politely (SIGTERM) or killed."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.popen: Optional[subprocess.Popen[bytes]] = None
        self.starts = 0

    def _spawn(self, args: list[str], env: Optional[dict[str, str]] = None) -> None:
        self.starts += 1
        log = open(self.folder / f"server-{self.starts}.log", "ab")
        self.popen = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.folder,
                                      env={**os.environ, **(env or {})}, start_new_session=True)
        log.close()

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.popen is None:
            return
        if self.alive():
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.popen.wait(10)

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.folder.glob("server-*.log")))


class RedisServer(_Server):
    """redis-server with an append-only file fsynced on every write: a restart loses nothing."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        for _ in range(5):
            self.port = self.port or free_port()
            self._spawn(["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.folder),
                         "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--protected-mode", "yes",
                         "--daemonize", "no"])
            try:
                wait_for(lambda: _port_open(self.port) or not self.alive(), 20, what="redis-server listening")
            except AssertionError:
                self.stop()
                raise
            if self.alive():
                return self
            if self.starts > 1 and "Address already in use" not in self.log():
                break
            self.port = 0  # the racy free port was taken meanwhile: another one
        raise AssertionError(f"redis-server did not start:\n{self.log()[-3000:]}")

    def restart(self) -> None:
        self.stop()
        self.start()


class RabbitServer(_Server):
    """A RabbitMQ node of its own: its own node name, epmd port, data and log folders; 127.0.0.1 only."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.port = free_port()
        self.dist_port = free_port()
        self.epmd_port = free_port()
        self.node = f"tts-test-{os.getpid()}-{int(time.time())}@localhost"
        (folder / "home").mkdir()
        (folder / "enabled_plugins").write_text("[].\n")
        (folder / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.port}\nloopback_users = none\n"
            "log.console = true\nlog.file = false\n")

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def env(self) -> dict[str, str]:
        f = self.folder
        return {
            "HOME": str(f / "home"), "RABBITMQ_NODENAME": self.node, "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port), "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port), "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_MNESIA_BASE": str(f / "mnesia"), "RABBITMQ_LOG_BASE": str(f / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(f / "enabled_plugins"), "RABBITMQ_CONFIG_FILE": str(f / "rabbitmq"),
            "RABBITMQ_PID_FILE": str(f / "rabbitmq.pid"), "RABBITMQ_CONF_ENV_FILE": str(f / "rabbitmq-env.conf"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def start(self) -> "RabbitServer":
        self._spawn([str(RABBITMQ_SERVER)], self.env())
        wait_for(lambda: "Server startup complete" in self.log() and _port_open(self.port) or not self.alive(), 90,
                 interval_s=0.2, what="rabbitmq-server startup")
        if not self.alive():
            raise AssertionError(f"rabbitmq-server did not start:\n{self.log()[-3000:]}")
        return self

    def restart(self) -> None:
        marker = self.log().count("Server startup complete")
        self.stop(60)
        self._spawn([str(RABBITMQ_SERVER)], self.env())
        wait_for(lambda: self.log().count("Server startup complete") > marker and _port_open(self.port)
                 or not self.alive(), 90, interval_s=0.2, what="rabbitmq-server restart")
        if not self.alive():
            raise AssertionError(f"rabbitmq-server did not restart:\n{self.log()[-3000:]}")

    def stop(self, timeout_s: float = 30.0) -> None:
        super().stop(timeout_s)
        # Its own epmd (on its own port) outlives the node; end it by the pid that listens there.
        result = subprocess.run(["ss", "-ltnpH", f"sport = :{self.epmd_port}"], capture_output=True, text=True)
        for token in result.stdout.split("pid=")[1:]:
            pid = int(token.split(",", 1)[0])
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def syntheses(broker: BrokerProc) -> int:
    """How many jobs the workers synthesised (their jobs_done, summed)."""
    from tts_client import TtsClient

    with TtsClient(broker.frontend, request_timeout_s=5) as client:
        return sum(w.jobs_done for w in client.broker_status().workers)


def job_text(i: int, tag: str) -> str:
    """A unique one-sentence text (unique, so no job is answered from another's cached result)."""
    return f"Bridge job {tag} number {i} speaks"


def check_audio(result: dict[str, Any], text: str, speaker: Optional[str] = None) -> None:
    """The file at result["path"] holds exactly the tone engine's samples for `text`; sha256 and duration agree."""
    import hashlib

    path = Path(result["path"])
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == result["sha256"], path
    samples, rate = soundfile.read(path, dtype="int16")
    expected = render_tone(speaker_pitch_hz(speaker), sentence_duration_s(text))
    assert rate == 16000 == int(result["sample_rate"])
    assert np.array_equal(samples, expected), f"{path}: audio differs from the tone engine's for {text!r}"
    assert int(result["duration_ms"]) == round(len(expected) / 16)
