"""Fixtures of the gateway tests: a real `tts gateway` process on a port it picks itself.

Processes go into the root conftest's `procs` list, so they are killed at teardown. Helpers: gatewaykit.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable

import pytest

from gatewaykit import API_KEY, GatewayProc
from harness import BrokerProc, Proc, wait_for


@pytest.fixture
def gateway_factory(tmp_path: Path, procs: list[Proc]) -> Callable[..., GatewayProc]:
    """gateway_factory(broker, MODELS="tts-1=tone", ...): start `tts gateway` on 127.0.0.1:0 and wait until it
    listens. Keyword arguments become TTS_GATEWAY_* variables; API_KEYS defaults to API_KEY."""
    counter = [0]

    def start(broker: BrokerProc, timeout_s: float = 30.0, **env: object) -> GatewayProc:
        counter[0] += 1
        ready = tmp_path / f"gateway-ready-{counter[0]}.json"
        variables = {"API_KEYS": API_KEY, **env}
        args = [sys.executable, "-m", "tts_client", "--broker", broker.frontend, "--log-level", "INFO",
                "gateway", "--listen", "127.0.0.1:0", "--ready-file", str(ready)]
        proc = Proc(args, tmp_path / f"gateway-{counter[0]}.log",
                    {f"TTS_GATEWAY_{k.upper()}": str(v) for k, v in variables.items()})
        procs.append(proc)
        wait_for(lambda: ready.exists() or not proc.alive(), timeout_s, what="gateway ready file")
        if not proc.alive():
            raise AssertionError(f"gateway exited at start:\n{proc.log()}")
        return GatewayProc(proc, json.loads(ready.read_text())["url"])

    return start
