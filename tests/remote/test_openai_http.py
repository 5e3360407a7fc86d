"""The openai-http engine against real OpenAI-compatible servers: our own gateway (over a second broker with a
tone worker) and the loaded test server. Audio, speed, a 400, cancel, a server killed mid-stream, health."""

from __future__ import annotations

import signal
import time
from typing import Any, Callable

import pytest

from tts_client import JobFailed, TtsClient
from tts_client.errors import JobCancelled

from harness import BrokerProc, Proc, wait_for
from remote_fixtures import (  # noqa: F401 (fixtures)
    GatewayStack,
    SpeechServer,
    engine_stats,
    gateway_stack,
    openai_worker,
    speech_server,
)

pytestmark = pytest.mark.timeout(120)

TEXT = "Hello from the other broker. A second sentence follows."


def registered(client: TtsClient, n: int = 1, **wanted: Any) -> dict[str, Any]:
    """Wait until `n` openai-http workers are registered and the first one's view matches `wanted`."""

    def check() -> Any:
        workers = [w for w in client.broker_status(timeout_s=5).workers if w.engine == "openai-http"]
        if len(workers) < n:
            return None
        view = engine_stats(client)
        return view if view and all(view.get(k) == v for k, v in wanted.items()) else None

    return wait_for(check, 30, interval_s=0.1, what=f"openai-http worker with {wanted}")  # type: ignore[return-value]


def test_audio_equals_the_server_answer_with_speed_and_streaming(
        broker: BrokerProc, gateway_stack: GatewayStack, openai_worker: Callable[..., Proc],
        make_client: Callable[..., TtsClient]) -> None:
    openai_worker(broker, gateway_stack.v1, api_key_file=_key_file(broker), sample_rate=16000)
    client = make_client(broker.frontend)
    registered(client, health="up")

    direct = gateway_stack.speech(input=TEXT, voice="narrator", response_format="pcm")
    assert direct.status_code == 200 and len(direct.content) > 1000
    result = client.synthesize(TEXT, speaker="narrator")
    assert result.pcm == direct.content
    assert (result.sample_rate, result.meta.engine, result.meta.model) == (16000, "openai-http", "tts-1")

    faster = gateway_stack.speech(input=TEXT, voice="narrator", response_format="pcm", speed=1.25)
    assert faster.status_code == 200 and len(faster.content) < len(direct.content)
    assert client.synthesize(TEXT, speaker="narrator", voice={"length_scale": 0.8}).pcm == faster.content
    assert client.synthesize(TEXT, speaker="narrator", voice={"speed": 1.25}).pcm == faster.content

    with client.stream(TEXT, speaker="narrator") as stream:
        chunks = [chunk.pcm for chunk in stream]
    assert b"".join(chunks) == direct.content


def test_a_400_fails_the_job_once_and_is_not_retried(
        broker: BrokerProc, gateway_stack: GatewayStack, openai_worker: Callable[..., Proc],
        make_client: Callable[..., TtsClient]) -> None:
    openai_worker(broker, gateway_stack.v1, api_key_file=_key_file(broker), sample_rate=16000)
    client = make_client(broker.frontend)
    registered(client, health="up")
    too_long = "word " * 100  # the gateway takes 300 characters at most
    assert gateway_stack.speech(input=too_long, voice="narrator", response_format="pcm").status_code == 400
    handle = client.submit(too_long, speaker="narrator")
    with pytest.raises(JobFailed) as failed:
        handle.result()
    assert failed.value.code == "engine_error" and not failed.value.retryable
    assert "HTTP 400" in failed.value.message and "300" in failed.value.message
    assert client.job_status(handle.job_id).attempt == 1
    assert client.synthesize("Still fine.", speaker="narrator").num_frames > 0  # the worker carries on


def test_wrong_api_key_keeps_the_worker_out(
        broker: BrokerProc, gateway_stack: GatewayStack, openai_worker: Callable[..., Proc],
        make_client: Callable[..., TtsClient]) -> None:
    key = broker.tmp / "wrong.key"
    key.write_text("sk-not-this-one\n")
    openai_worker(broker, gateway_stack.v1, api_key_file=key, sample_rate=16000)
    client = make_client(broker.frontend)
    view = registered(client, health="down", capacity=0)
    assert "401" in view["health_error"] and "api_key_file" in view["health_error"]


def test_cancel_hangs_up_on_the_server(
        broker: BrokerProc, speech_server: Callable[..., SpeechServer], openai_worker: Callable[..., Proc],
        make_client: Callable[..., TtsClient]) -> None:
    server = speech_server(base_ms=0, per_request_ms=0)
    openai_worker(broker, server.v1)
    client = make_client(broker.frontend)
    registered(client, health="up")
    stream = client.stream("This one never ends [stall].", speaker="alloy")
    first = next(iter(stream))
    assert first.pcm and server.stats()["streaming"] == 1
    started = time.monotonic()
    stream.close()
    with pytest.raises(JobCancelled):
        stream.future.result()
    wait_for(lambda: server.stats()["aborted"] == 1 and server.stats()["in_flight"] == 0, 10,
             what="the server seeing the request aborted")
    print(f"cancel reached the server in {time.monotonic() - started:.2f} s")
    assert client.synthesize("After the cancel.", speaker="alloy").num_frames > 0


def test_server_killed_mid_stream_retries_elsewhere_and_goes_down(
        broker: BrokerProc, speech_server: Callable[..., SpeechServer], openai_worker: Callable[..., Proc],
        make_client: Callable[..., TtsClient]) -> None:
    doomed = speech_server("doomed", base_ms=0, per_request_ms=0)
    healthy = speech_server("healthy", base_ms=0, per_request_ms=0, stall_marker="[never]")
    openai_worker(broker, doomed.v1)
    client = make_client(broker.frontend)
    first_worker = registered(client, health="up")["worker_id"]
    handle = client.submit("Long answer [stall].", speaker="alloy")
    wait_for(lambda: doomed.stats()["streaming"] == 1, 20, what="the first attempt streaming")
    openai_worker(broker, healthy.v1)
    registered(client, n=2)
    doomed.proc.signal(signal.SIGKILL)
    result = handle.result()
    assert result.meta.attempt == 2 and result.meta.worker_id != first_worker
    assert healthy.stats()["requests"] == 1
    view = wait_for(lambda: (v := _view_of(client, first_worker)) and v.get("health") == "down" and v, 20,
                    what="the first worker reporting its server down")
    assert view["capacity"] == 0  # type: ignore[index]


def test_health_down_holds_jobs_in_the_queue_until_the_server_is_back(
        broker: BrokerProc, speech_server: Callable[..., SpeechServer], openai_worker: Callable[..., Proc],
        make_client: Callable[..., TtsClient]) -> None:
    server = speech_server(base_ms=0, per_request_ms=0)
    openai_worker(broker, server.v1)
    client = make_client(broker.frontend)
    registered(client, health="up", capacity=1)
    server.set_health(False)
    registered(client, health="down", capacity=0)
    handle = client.submit("Wait for the server.", speaker="alloy")
    time.sleep(1.0)  # nothing to await: the claim is that nothing happens meanwhile
    assert client.job_status(handle.job_id).state.value == "queued" and server.stats()["requests"] == 0
    server.set_health(True)
    assert handle.result().num_frames > 0


def _view_of(client: TtsClient, worker_id: str) -> Any:
    for worker in client.broker_status(timeout_s=5).workers:
        if worker.worker_id == worker_id:
            return {"capacity": worker.capacity, **worker.engine_stats}
    return None


def _key_file(broker: BrokerProc) -> str:
    from remote_fixtures import GATEWAY_KEY

    path = broker.tmp / "gateway.key"
    path.write_text(f"# the gateway's bearer token\n{GATEWAY_KEY}\n")
    return str(path)


def test_same_voice_prefers_the_same_server_when_jobs_queue(
        broker_factory: Callable[..., BrokerProc], speech_server: Callable[..., SpeechServer],
        openai_worker: Callable[..., Proc], make_client: Callable[..., TtsClient],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The broker's sticky routing on the engine's `warm` voices: with a backlog of two voices alternating, each
    server ends up with (nearly) one voice. The wait limit is raised so a slow machine cannot void the check."""
    monkeypatch.setenv("TTS_STICKY_MAX_WAIT_S", "60")
    broker = broker_factory()
    servers = [speech_server(f"s{i}", base_ms=60, per_request_ms=0, chunks=2, chunk_ms=10) for i in (1, 2)]
    for server in servers:
        openai_worker(broker, server.v1, min_concurrency=1, max_concurrency=1)
    client = make_client(broker.frontend)
    registered(client, n=2)
    handles = [client.submit(f"Line {i}.", speaker="anna" if i % 2 else "bert") for i in range(24)]
    assert all(h.result().num_frames > 0 for h in handles)
    voices = [server.stats()["voices"] for server in servers]
    purity = [max(v.count("anna"), v.count("bert")) / len(v) for v in voices]
    print(f"requests per server: {[len(v) for v in voices]}; share of its main voice: {purity}")
    assert all(len(v) >= 4 for v in voices) and min(purity) >= 0.8
