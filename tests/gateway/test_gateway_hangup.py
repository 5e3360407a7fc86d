"""Attack (issue 19, item 18): a caller that hangs up before the first audio left its job running and held a
concurrency slot. Now the job is cancelled on the broker and the slot freed (MAX_CONCURRENT_REQUESTS=1 here:
the next request is served, not 429).
"""

from __future__ import annotations

import json
import socket
from typing import Callable

import httpx
import pytest

from tts_client import TtsClient

from gatewaykit import API_KEY, GatewayProc
from harness import BrokerProc, wait_for

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("response_format", ["wav", "mp3"], ids=["streamed", "whole"])
def test_hanging_up_before_the_first_audio_cancels_the_job_and_frees_the_slot(
        broker: BrokerProc, start_worker: Callable[..., object], response_format: str,
        gateway_factory: Callable[..., GatewayProc]) -> None:
    start_worker(broker, engine="tone", opts={"latency_s": 30})
    gateway = gateway_factory(broker, MODELS="tts-1=tone", MAX_CONCURRENT_REQUESTS="1")
    host, port = gateway.url.removeprefix("http://").split(":")
    body = json.dumps({"model": "tts-1", "input": "Never heard.", "voice": "alloy",
                       "response_format": response_format}).encode()
    with TtsClient(broker.frontend, request_timeout_s=10) as client:
        wait_for(lambda: client.broker_status().worker_count == 1, 30, what="the slow tone worker")
        with socket.create_connection((host, int(port)), timeout=10) as caller:
            caller.sendall(b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           b"Authorization: Bearer " + API_KEY.encode() + b"\r\nContent-Length: "
                           + str(len(body)).encode() + b"\r\n\r\n" + body)
            wait_for(lambda: client.broker_status().jobs["running"] == 1, 30, what="the job running")
        # The caller is gone: the job is cancelled (the worker is free again) ...
        wait_for(lambda: client.broker_status().jobs["running"] == 0, 30, what="the job cancelled")
        assert [str(j.state.value if hasattr(j.state, "value") else j.state) for j in client.jobs()] == ["cancelled"]
    # ... and the one slot is free: the next request is admitted (it waits for the slow worker), not refused 429.
    try:
        reply = httpx.post(f"{gateway.v1}/audio/speech", headers={"Authorization": f"Bearer {API_KEY}"},
                           json={"model": "tts-1", "input": "x", "voice": "alloy"}, timeout=3)
    except httpx.ReadTimeout:
        return  # admitted and waiting for its audio
    assert reply.status_code != 429, reply.text
