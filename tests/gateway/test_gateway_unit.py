"""The gateway's parts in process: settings parsing, audio encoding, error mapping, model/voice resolution."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tts_protocol.messages import WorkerView

from tts_client import AsyncTtsClient, BrokerUnavailable, InvalidRequest, JobFailed, JobTimeout, QueueFull
from tts_gateway.catalog import Catalog, ModelRoute, serves
from tts_gateway.encoding import RESPONSE_FORMATS, StreamEncoder, encode_whole, resample
from tts_gateway.errors import ApiError, from_client_error
from tts_gateway.settings import GatewaySettings, parse_listen

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


def tone(n: int = 1600, rate: int = 16000) -> bytes:
    return (np.sin(np.arange(n) * 2 * np.pi * 440 / rate) * 8000).astype("<i2").tobytes()


def test_settings_read_pairs_json_lists_and_key_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TTS_GATEWAY_MODELS", "tts-1=tone, tts-1-hd = piper:en_US-joe-medium")
    monkeypatch.setenv("TTS_GATEWAY_VOICES", '{"alloy": "speaker-a"}')
    monkeypatch.setenv("TTS_GATEWAY_API_KEYS", "k1,k2")
    keys = tmp_path / "keys"
    keys.write_text("# team keys\nk3\n\n  k4  \n")
    monkeypatch.setenv("TTS_GATEWAY_API_KEY_FILE", str(keys))
    monkeypatch.setenv("TTS_GATEWAY_SPEED_ENGINES", "piper")
    s = GatewaySettings()
    assert s.models == {"tts-1": "tone", "tts-1-hd": "piper:en_US-joe-medium"}
    assert s.voices == {"alloy": "speaker-a"}
    assert s.tokens() == {"k1", "k2", "k3", "k4"}
    assert s.speed_engines == ["piper"]
    monkeypatch.setenv("TTS_GATEWAY_MODELS", "tts-1")
    with pytest.raises(ValueError, match="NAME=VALUE"):
        GatewaySettings()


def test_default_settings_map_openai_names() -> None:
    s = GatewaySettings()
    assert s.models == {"tts-1": "piper", "tts-1-hd": "fish-speech"}
    assert s.voices["alloy"] == "default" and s.tokens() == frozenset()


@pytest.mark.parametrize("listen, expected", [("127.0.0.1:8000", ("127.0.0.1", 8000)), ("[::1]:0", ("::1", 0)),
                                              ("0.0.0.0:65535", ("0.0.0.0", 65535))])
def test_parse_listen(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


@pytest.mark.parametrize("listen", ["8000", ":8000", "host:port", "host:70000"])
def test_parse_listen_refuses(listen: str) -> None:
    with pytest.raises(ValueError):
        parse_listen(listen)


def test_streamed_wav_has_an_open_ended_header_and_decodes() -> None:
    encoder = StreamEncoder(RESPONSE_FORMATS["wav"])
    first, second = tone(800), tone(1600)
    data = encoder.chunk(first, 16000) + encoder.chunk(second, 16000)
    assert data[:4] == b"RIFF" and data[4:8] == b"\xff\xff\xff\xff" and len(data) == 44 + len(first + second)
    samples, rate = soundfile.read(io.BytesIO(data), dtype="int16")
    assert rate == 16000 and samples.tobytes() == first + second


def test_pcm_stream_can_be_resampled_to_openai_rate() -> None:
    encoder = StreamEncoder(RESPONSE_FORMATS["pcm"], pcm_sample_rate=24000)
    assert encoder.output_rate(16000) == 24000
    assert len(encoder.chunk(tone(1600), 16000)) == 2400 * 2
    with pytest.raises(ValueError):
        StreamEncoder(RESPONSE_FORMATS["mp3"])


def test_resample_keeps_duration_and_pitch() -> None:
    out = np.frombuffer(resample(tone(22050, 22050), 22050, 48000), dtype="<i2")
    assert len(out) == 48000
    spectrum = np.abs(np.fft.rfft(out.astype(np.float64)))
    assert abs(int(np.argmax(spectrum)) - 440) <= 1  # 1 Hz bins over one second


@pytest.mark.parametrize("fmt, rate, decoded_rate", [("flac", 16000, 16000), ("mp3", 22050, 22050),
                                                     ("opus", 16000, 16000), ("opus", 22050, 48000)])
def test_whole_formats_decode_with_the_same_duration(fmt: str, rate: int, decoded_rate: int) -> None:
    pcm = tone(rate, rate)  # one second
    data = encode_whole(RESPONSE_FORMATS[fmt], pcm, rate)
    samples, got_rate = soundfile.read(io.BytesIO(data), dtype="int16")
    assert got_rate == decoded_rate
    assert abs(len(samples) / got_rate - 1.0) < 0.06, (fmt, len(samples))


@pytest.mark.parametrize("exc, status, code", [
    (BrokerUnavailable("gone"), 503, "broker_unavailable"),
    (JobTimeout("slow"), 504, "timeout"),
    (QueueFull("queue_full", "full", retryable=True), 429, "queue_full"),
    (JobFailed("no_workers", "none"), 503, "no_workers"),
    (JobFailed("deadline_exceeded", "late"), 504, "deadline_exceeded"),
    (JobFailed("bad_request", "too long"), 400, "bad_request"),
    (JobFailed("engine_error", "unknown speaker"), 400, "engine_error"),
    (JobFailed("max_attempts", "poison"), 502, "max_attempts"),
    (InvalidRequest("bad id"), 400, "invalid_value"),
])
def test_client_errors_map_to_http(exc: Exception, status: int, code: str) -> None:
    error = from_client_error(exc)  # type: ignore[arg-type]
    assert (error.status, error.code) == (status, code)
    body = error.response().body
    assert b'"error"' in body and b'"message"' in body and b'"param"' in body


def test_routes_voices_and_speed() -> None:
    settings = GatewaySettings(models={"tts-1": "piper", "tts-1-hd": "fish-speech", "any": ""},
                               voices={"alloy": "default"})
    client = AsyncTtsClient("tcp://127.0.0.1:1", request_timeout_s=0.1)
    try:
        catalog = Catalog(settings, client)
        assert catalog.route("tts-1") == ModelRoute("tts-1", "piper")
        assert catalog.route("any").routing_key is None
        with pytest.raises(ApiError) as excinfo:
            catalog.route("gpt-4")
        assert excinfo.value.status == 400 and excinfo.value.code == "model_not_found"
        assert catalog.speaker("alloy") == "default" and catalog.speaker("custom") == "custom"
        assert catalog.voice_settings(catalog.route("tts-1"), 1.0) == {}
        assert catalog.voice_settings(catalog.route("tts-1"), 2.0) == {"length_scale": 0.5}
        with pytest.raises(ApiError, match="cannot change speed"):
            catalog.voice_settings(catalog.route("tts-1-hd"), 1.25)
        strict = Catalog(settings.model_copy(update={"pass_through_voices": False}), client)
        with pytest.raises(ApiError, match="unknown voice"):
            strict.speaker("custom")
    finally:
        client.close()


def test_worker_routing_rule() -> None:
    worker = WorkerView(worker_id="w", engine="piper", model="en_US-joe-medium", warm=["a"])
    assert serves(worker, None) and serves(worker, "piper") and serves(worker, "piper:en_US-joe-medium")
    assert not serves(worker, "fish-speech") and not serves(worker, "piper:other")


def test_tts_gateway_without_its_extra_says_which_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from click.testing import CliRunner

    from tts_client.cli import main

    monkeypatch.setitem(sys.modules, "fastapi", None)  # the extra not installed
    result = CliRunner().invoke(main, ["gateway"])
    assert result.exit_code == 2
    assert "pip install -e '.[gateway]'" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1

    monkeypatch.setitem(sys.modules, "tts_gateway.cli", None)  # the package itself missing
    result = CliRunner().invoke(main, ["gateway", "--help"])
    assert result.exit_code == 2 and "tts-broker[gateway]" in result.output and "Traceback" not in result.output
