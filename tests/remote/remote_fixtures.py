"""Fixtures for the openai-http engine: real OpenAI-compatible servers on loopback.

Test modules import what they use (`from remote_fixtures import speech_server, ...`); pytest then finds them.

- `speech_server`: tests/remote/loaded_speech_server.py (a TEST server whose first audio slows with load).
- `gateway_stack` (once per module): this project's own `tts gateway` in front of a second broker with a
  tone worker, i.e. a real OpenAI-compatible server made of our parts.
- `openai_worker`: `tts-worker --engine openai-http` against one of them.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import httpx
import pytest

from tts_client import TtsClient

from harness import ROOT, BrokerProc, Proc, wait_for

SERVER = ROOT / "tests" / "remote" / "loaded_speech_server.py"
GATEWAY_KEY = "sk-remote-test"
GATEWAY_MODEL = "tts-1"


@dataclasses.dataclass
class SpeechServer:
    proc: Proc
    url: str

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"

    def stats(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.url}/stats", timeout=5).json())

    def reset(self) -> None:
        httpx.post(f"{self.url}/stats/reset", timeout=5).raise_for_status()

    def set_health(self, up: bool) -> None:
        httpx.post(f"{self.url}/admin/health", params={"up": "1" if up else "0"}, timeout=5).raise_for_status()


def start_server(tmp: Path, procs: list[Proc], name: str, **flags: object) -> SpeechServer:
    ready = tmp / f"{name}-ready.json"
    args = [sys.executable, str(SERVER), "--listen", "127.0.0.1:0", "--ready-file", str(ready)]
    for key, value in flags.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    proc = Proc(args, tmp / f"{name}.log")
    procs.append(proc)
    wait_for(lambda: ready.exists() or not proc.alive(), 20, what=f"{name} ready file")
    if not proc.alive():
        raise AssertionError(f"{name} exited at start:\n{proc.log()}")
    return SpeechServer(proc, json.loads(ready.read_text())["url"])


@pytest.fixture
def speech_server(tmp_path: Path, procs: list[Proc]) -> Callable[..., SpeechServer]:
    """speech_server(name="s1", base_ms=..., per_request_ms=..., ...) -> a running loaded test server."""

    def start(name: str = "server", **flags: object) -> SpeechServer:
        return start_server(tmp_path, procs, name, **flags)

    return start


@pytest.fixture
def openai_worker(start_worker: Callable[..., Proc]) -> Callable[..., Proc]:
    """openai_worker(broker, url, **engine options) -> a `tts-worker --engine openai-http` process."""

    def start(broker: BrokerProc, url: str, **opts: object) -> Proc:
        options: dict[str, object] = {"url": url, "model": GATEWAY_MODEL, "health_interval_s": 0.5, **opts}
        return start_worker(broker, "openai-http", options)

    return start


@dataclasses.dataclass
class GatewayStack:
    broker: BrokerProc
    url: str

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"

    def speech(self, **body: Any) -> httpx.Response:
        return httpx.post(f"{self.v1}/audio/speech", json={"model": GATEWAY_MODEL, **body},
                          headers={"Authorization": f"Bearer {GATEWAY_KEY}"}, timeout=30)


@pytest.fixture(scope="module")
def gateway_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStack]:
    """A second broker with one tone worker (2 jobs at once) behind `tts gateway` (pcm at the engine's rate)."""
    tmp = tmp_path_factory.mktemp("gateway-stack")
    procs: list[Proc] = []
    try:
        broker = BrokerProc(tmp, procs, []).start()
        procs.append(Proc([sys.executable, "-m", "tts_worker", "--broker", broker.backend, "--engine", "tone",
                           "--engine-opt", "capacity=2", "--name", "upstream-tone"], tmp / "tone.log"))
        ready = tmp / "gateway-ready.json"
        gateway = Proc([sys.executable, "-m", "tts_client", "--broker", broker.frontend, "gateway",
                        "--listen", "127.0.0.1:0", "--ready-file", str(ready)], tmp / "gateway.log",
                       {"TTS_GATEWAY_API_KEYS": GATEWAY_KEY, "TTS_GATEWAY_MODELS": f"{GATEWAY_MODEL}=tone",
                        "TTS_GATEWAY_MAX_INPUT_CHARS": "300"})
        procs.append(gateway)
        wait_for(lambda: ready.exists() or not gateway.alive(), 30, what="gateway ready file")
        assert gateway.alive(), gateway.log()
        stack = GatewayStack(broker, json.loads(ready.read_text())["url"])
        wait_for(lambda: stack.speech(input="Warm up.", voice="alloy", response_format="pcm").status_code == 200,
                 30, interval_s=0.2, what="the gateway answering with audio")
        yield stack
    finally:
        for proc in procs:
            proc.kill()


def engine_stats(client: TtsClient, name_prefix: str = "") -> Optional[dict[str, Any]]:
    """The first openai-http worker's view (capacity, engine stats), None before it registered."""
    for worker in client.broker_status(timeout_s=5).workers:
        if worker.engine == "openai-http" and worker.name.startswith(name_prefix):
            return {"capacity": worker.capacity, "worker_id": worker.worker_id, **worker.engine_stats}
    return None
