"""The HTTP gateway end to end: real broker, real tone and Piper workers, a real `tts gateway` process, and the
official `openai` package (plus httpx for what the SDK hides) as the caller."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable

import httpx
import numpy as np
import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from tts_client import TtsClient

from gatewaykit import API_KEY, GatewayProc, decode, tone_pcm
from harness import BrokerProc, Proc, free_port, registered_workers, wait_for

pytestmark = pytest.mark.timeout(120)

TEXT = "Hello from the gateway. A second sentence!"


def sdk(gateway: GatewayProc, api_key: str = API_KEY) -> OpenAI:
    return OpenAI(base_url=gateway.v1, api_key=api_key, max_retries=0, timeout=60)


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["message"]
    return dict(body["error"])


def test_openai_sdk_gets_tone_audio_whole_streamed_and_as_events(
        broker: BrokerProc, tone_workers: Callable[..., Proc], gateway_factory: Callable[..., GatewayProc]) -> None:
    tone_workers(broker, n=2)
    gateway = gateway_factory(broker, models="tts-1=tone,tts-1-hd=tone")
    client = sdk(gateway)

    wav = client.audio.speech.create(model="tts-1", voice="alloy", input=TEXT, response_format="wav")
    samples, rate = decode(wav.content)
    assert rate == 16000 and samples.tobytes() == tone_pcm(TEXT)  # alloy -> the default speaker

    with client.audio.speech.with_streaming_response.create(model="tts-1", voice="alloy", input=TEXT,
                                                            response_format="pcm") as response:
        assert response.headers["x-sample-rate"] == "16000"
        assert response.headers["content-type"] == "audio/pcm"
        streamed = b"".join(response.iter_bytes())
    assert streamed == tone_pcm(TEXT)

    # Any other voice name is the engine's speaker (tone: its pitch); speed 2 is length_scale 0.5.
    raw = client.audio.speech.create(model="tts-1-hd", voice="speaker-7", input=TEXT, response_format="pcm",
                                     speed=2.0)
    assert raw.content == tone_pcm(TEXT, "speaker-7", length_scale=0.5)
    assert raw.content != tone_pcm(TEXT, "speaker-7")

    flac = client.audio.speech.create(model="tts-1", voice="alloy", input=TEXT, response_format="flac")
    assert decode(flac.content)[0].tobytes() == tone_pcm(TEXT)  # lossless
    expected_s = len(tone_pcm(TEXT)) / 2 / 16000
    for fmt, magic in (("mp3", None), ("opus", b"OggS")):
        data = client.audio.speech.create(model="tts-1", voice="alloy", input=TEXT, response_format=fmt).content
        if magic:
            assert data.startswith(magic) and b"OpusHead" in data[:64]
        decoded, decoded_rate = decode(data)
        assert abs(len(decoded) / decoded_rate - expected_s) < 0.1, (fmt, len(decoded), decoded_rate)
        assert np.abs(decoded.astype(np.float64)).mean() > 1000  # a tone, not silence
    default_mp3 = client.audio.speech.create(model="tts-1", voice="alloy", input=TEXT)  # OpenAI's default: mp3
    assert default_mp3.response.headers["content-type"] == "audio/mpeg"

    # stream_format=sse: speech.audio.delta events with base64 audio, then speech.audio.done.
    with httpx.stream("POST", f"{gateway.v1}/audio/speech", headers={"Authorization": f"Bearer {API_KEY}"},
                      json={"model": "tts-1", "voice": "alloy", "input": TEXT, "response_format": "pcm",
                            "stream_format": "sse"}, timeout=60) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[len("data: "):]) for line in response.iter_lines() if line.startswith("data: ")]
    assert [e["type"] for e in events][-1] == "speech.audio.done"
    assert all(e["type"] == "speech.audio.delta" for e in events[:-1]) and len(events) >= 2
    assert b"".join(base64.b64decode(e["audio"]) for e in events[:-1]) == tone_pcm(TEXT)

    models = client.models.list()
    assert {(m.id, m.routing_key, m.workers) for m in models.data} == {("tts-1", "tone", 2),  # type: ignore
                                                                      ("tts-1-hd", "tone", 2)}
    voices = httpx.get(f"{gateway.v1}/audio/voices", headers={"Authorization": f"Bearer {API_KEY}"}).json()
    by_id = {v["id"]: v for v in voices["data"]}
    assert by_id["alloy"]["speaker"] == "default" and by_id["alloy"]["source"] == "configured"
    health = httpx.get(f"{gateway.url}/health").json()
    assert health["status"] == "ok" and health["workers"] == 2

    with pytest.raises(openai.AuthenticationError) as excinfo:
        sdk(gateway, api_key="sk-wrong").audio.speech.create(model="tts-1", voice="alloy", input=TEXT)
    assert excinfo.value.status_code == 401


def test_openai_sdk_gets_piper_speech(broker: BrokerProc, start_worker: Callable[..., Proc],
                                      make_client: Callable[..., TtsClient],
                                      gateway_factory: Callable[..., GatewayProc]) -> None:
    worker = start_worker(broker, engine="piper", opts={"noise_scale": 0, "noise_w_scale": 0})
    watcher = make_client(broker.frontend)
    wait_for(lambda: registered_workers(watcher) >= 1 or not worker.alive(), 90, what="a Piper worker")
    assert worker.alive(), worker.log()
    gateway = gateway_factory(broker, models="tts-1=piper")
    client = sdk(gateway)
    text = "The gateway speaks with Piper. It streams sentence by sentence. Here is the third one."

    wav = client.audio.speech.create(model="tts-1", voice="alloy", input=text, response_format="wav")
    samples, rate = decode(wav.content)
    assert rate == 22050
    assert 2.0 < len(samples) / rate < 15.0
    assert np.abs(samples.astype(np.float64)).mean() > 100  # speech, not silence

    pieces: list[bytes] = []
    with client.audio.speech.with_streaming_response.create(model="tts-1", voice="alloy", input=text,
                                                            response_format="wav") as response:
        for piece in response.iter_bytes():
            pieces.append(piece)
    assert len(pieces) >= 2  # audio arrived while later sentences were still being synthesised
    streamed, _ = decode(b"".join(pieces))
    assert streamed.tobytes() == samples.tobytes()  # noise 0: deterministic

    fast = client.audio.speech.create(model="tts-1", voice="alloy", input=text, response_format="pcm", speed=2.0)
    assert len(fast.content) < 0.75 * len(samples) * 2
    opus = client.audio.speech.create(model="tts-1", voice="alloy", input=text, response_format="opus")
    decoded, opus_rate = decode(opus.content)  # 22,050 Hz resampled to 48 kHz for Ogg Opus
    assert abs(len(decoded) / opus_rate - len(samples) / rate) < 0.1

    with pytest.raises(openai.BadRequestError) as excinfo:  # Piper's joe voice has one speaker
        client.audio.speech.create(model="tts-1", voice="nobody-here", input=text, response_format="wav")
    assert "unknown speaker" in str(excinfo.value)

    # A caller that hangs up mid-stream: its job is cancelled on the broker and its slot freed.
    single = gateway_factory(broker, models="tts-1=piper", max_concurrent_requests=1)
    long_text = " ".join(f"This is sentence number {i} of a long reading." for i in range(12))
    with httpx.stream("POST", f"{single.v1}/audio/speech", headers={"Authorization": f"Bearer {API_KEY}"},
                      json={"model": "tts-1", "voice": "alloy", "input": long_text, "response_format": "pcm"},
                      timeout=60) as response:
        job_id = response.headers["x-job-id"]
        assert next(response.iter_raw())
    wait_for(lambda: watcher.job_status(job_id).state.value == "cancelled", 20, what="the abandoned job cancelled")
    short = sdk(single).audio.speech.create(model="tts-1", voice="alloy", input="Next.", response_format="pcm")
    assert len(short.content) > 0


def test_fifty_concurrent_requests_get_distinct_correct_audio(
        broker: BrokerProc, tone_workers: Callable[..., Proc], gateway_factory: Callable[..., GatewayProc]) -> None:
    tone_workers(broker, n=2)
    gateway = gateway_factory(broker, models="tts-1=tone")
    # The tone engine's audio depends on sentence lengths and the speaker, so each text's lengths differ.
    texts = [f"Request number {i}. It says {'la' * i}!" for i in range(50)]

    async def run() -> list[bytes]:
        client = AsyncOpenAI(base_url=gateway.v1, api_key=API_KEY, max_retries=0, timeout=90)
        try:
            responses = await asyncio.gather(*(
                client.audio.speech.create(model="tts-1", voice=f"voice-{i % 5}", input=text, response_format="wav")
                for i, text in enumerate(texts)))
        finally:
            await client.close()
        return [r.content for r in responses]

    bodies = asyncio.run(run())
    assert len(set(bodies)) == 50
    for i, (text, body) in enumerate(zip(texts, bodies, strict=True)):
        samples, rate = decode(body)
        assert rate == 16000 and samples.tobytes() == tone_pcm(text, f"voice-{i % 5}"), i


def test_errors_have_openai_shape_and_status(broker: BrokerProc, tone_workers: Callable[..., Proc],
                                             gateway_factory: Callable[..., GatewayProc]) -> None:
    tone_workers(broker, n=1, latency_s=1.5)
    gateway = gateway_factory(broker, models="tts-1=tone,tts-1-hd=fish-speech", max_input_chars=100,
                              request_timeout_s=0.5)
    auth = {"Authorization": f"Bearer {API_KEY}"}
    url = f"{gateway.v1}/audio/speech"
    ok = {"model": "tts-1", "voice": "alloy", "input": "Hi.", "response_format": "wav"}
    with httpx.Client(timeout=30) as http:
        def post(body: Any = None, *, content: Any = None, headers: Any = None) -> httpx.Response:
            return http.post(url, json=body, content=content, headers=headers if headers is not None else auth)

        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}):
            response = post(ok, headers=headers)
            assert response.status_code == 401 and error_of(response)["code"] == "invalid_api_key"
            assert response.headers["www-authenticate"] == "Bearer"
        bad = [
            ({**ok, "model": "gpt-9"}, "model", "unknown model"),
            ({**ok, "response_format": "aac"}, "response_format", "aac is not available"),
            ({**ok, "response_format": "ogg"}, "response_format", "response_format"),
            ({**ok, "input": ""}, "input", "empty"),
            ({**ok, "input": " \n\t "}, "input", "white space"),
            ({**ok, "input": "x" * 101}, "input", "limit is 100"),
            ({**ok, "speed": 9}, "speed", "less than or equal to 4"),
            ({**ok, "model": "tts-1-hd", "speed": 1.5}, "speed", "cannot change speed"),
            ({**ok, "voice": " "}, "voice", "voice is empty"),
            ({**ok, "voice": "v" * 300}, "voice", "limit is 256"),
            ({k: v for k, v in ok.items() if k != "input"}, "input", "Field required"),
            ([1, 2], None, "JSON object"),
        ]
        for body, param, words in bad:
            response = post(body)
            assert response.status_code == 400, (body, response.text)
            error = error_of(response)
            assert error["type"] == "invalid_request_error" and error["param"] == param, (body, error)
            assert words in error["message"], (body, error)
        for raw in (b"{not json", b"", b"\xff\xfe"):
            response = post(content=raw, headers={**auth, "Content-Type": "application/json"})
            assert response.status_code == 400 and error_of(response)["type"] == "invalid_request_error", raw

        response = post({**ok, "model": "tts-1-hd"})  # no fish-speech worker connected
        assert response.status_code == 503 and error_of(response)["code"] == "no_workers"
        response = post(ok)  # the tone worker waits 1.5 s; the request may take 0.5 s
        assert response.status_code == 504 and error_of(response)["type"] == "timeout_error", response.text

        response = http.get(f"{gateway.url}/nowhere")
        assert response.status_code == 404 and error_of(response)["code"] == "not_found"
        response = http.get(url, headers=auth)
        assert response.status_code == 405 and error_of(response)["code"] == "method_not_allowed"
    assert "Traceback" not in gateway.proc.log()


def test_requests_beyond_the_limit_get_429(broker: BrokerProc, tone_workers: Callable[..., Proc],
                                           make_client: Callable[..., TtsClient],
                                           gateway_factory: Callable[..., GatewayProc]) -> None:
    tone_workers(broker, n=1, latency_s=1.0)
    gateway = gateway_factory(broker, models="tts-1=tone", max_concurrent_requests=1)
    client = sdk(gateway)
    first: dict[str, Any] = {}

    def slow(text: str = TEXT) -> None:
        first["audio"] = client.audio.speech.create(model="tts-1", voice="alloy", input=text,
                                                    response_format="wav").content

    thread = threading.Thread(target=slow)
    thread.start()
    watcher = make_client(broker.frontend)
    wait_for(lambda: watcher.broker_status().jobs.get("running", 0) >= 1, 20, what="the first job running")
    with pytest.raises(openai.RateLimitError) as excinfo:
        client.audio.speech.create(model="tts-1", voice="alloy", input="Second.", response_format="wav")
    assert excinfo.value.status_code == 429
    thread.join(30)
    assert decode(first["audio"])[0].tobytes() == tone_pcm(TEXT)
    # The slot is free again once the first answer is sent.
    again = client.audio.speech.create(model="tts-1", voice="alloy", input="Second.", response_format="pcm")
    assert again.content == tone_pcm("Second.")

    # SIGTERM: the request in progress still gets its audio, then the gateway exits cleanly.
    first.clear()
    thread = threading.Thread(target=slow, args=("A new text, not in the result cache.",))
    thread.start()
    wait_for(lambda: watcher.broker_status().jobs.get("running", 0) >= 1, 20, what="a job running")
    gateway.proc.signal(signal.SIGTERM)
    thread.join(30)
    assert decode(first["audio"])[0].tobytes() == tone_pcm("A new text, not in the result cache.")
    assert gateway.proc.popen.wait(30) == 0, gateway.proc.log()


def test_tts_up_starts_a_gateway_beside_the_broker(procs: list[Proc], tmp_path: Path) -> None:
    port = free_port()
    frontend, backend = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    args = [sys.executable, "-m", "tts_client", "up", "--workers", "1", "--engine", "tone",
            "--frontend", frontend, "--backend", backend, "--drain-grace-s", "2",
            "--broker-opt", f"state-dir={tmp_path / 'state'}", "--gateway", f"127.0.0.1:{port}"]
    up = Proc(args, tmp_path / "up.log")
    procs.append(up)
    wait_for(lambda: "worker(s) ready" in up.log() or not up.alive(), 60, what="tts up ready")
    assert up.alive() and f"gateway listening on http://127.0.0.1:{port}" in up.log(), up.log()
    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=60)
    # `tts up` maps both OpenAI models to the one engine it started (unless TTS_GATEWAY_MODELS says otherwise).
    audio = client.audio.speech.create(model="tts-1", voice="alloy", input=TEXT, response_format="wav")
    assert decode(audio.content)[0].tobytes() == tone_pcm(TEXT)
    up.signal(signal.SIGTERM)
    assert up.popen.wait(60) == 0, up.log()
    assert "stopping the gateway" in up.log()


def test_tts_lists_gateway_without_importing_it() -> None:
    probe = ("import sys, tts_client.cli as c; print(c.main.list_commands(None).count('gateway'), "
             "any(m.startswith('tts_gateway') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["1", "False"]
