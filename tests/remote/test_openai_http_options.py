"""The openai-http engine's options and request body, in-process (no server needed: nothing is loaded)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from tts_worker.engines.base import EngineError, EngineLoadError, SynthesisRequest
from tts_worker.engines.openai_http import OpenAIHttpEngine
from tts_worker.engines.openai_http.pcm_body import PcmBody, WavMismatch
from tts_worker.engines.openai_http.transport import error_message

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]

URL = "http://127.0.0.1:9/v1"


@pytest.mark.parametrize(("options", "words"), [
    ({"model": "m"}, "url=http"),
    ({"url": URL}, "model=NAME is required"),
    ({"url": "ftp://127.0.0.1/v1", "model": "m"}, "not an http(s) URL"),
    ({"url": URL + "?x=1", "model": "m"}, "query or fragment"),
    ({"url": URL, "model": "m", "min_concurrency": "8", "max_concurrency": "4"}, "above max_concurrency"),
    ({"url": URL, "model": "m", "ttfa_target_ms": "fast"}, "not a number"),
    ({"url": URL, "model": "m", "colour": "blue"}, "unknown option(s) colour"),
])
def test_bad_options_are_one_line_load_errors(options: dict[str, str], words: str) -> None:
    with pytest.raises(EngineLoadError) as caught:
        OpenAIHttpEngine(options=options)
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_api_key_file_first_key_line_or_a_clear_error(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("# comment\n\n  sk-one  \nsk-two\n")
    assert OpenAIHttpEngine(options={"url": URL, "model": "m", "api_key_file": str(key)}).api_key == "sk-one"
    key.write_text("# only a comment\n")
    with pytest.raises(EngineLoadError, match="holds no key"):
        OpenAIHttpEngine(options={"url": URL, "model": "m", "api_key_file": str(key)})
    with pytest.raises(EngineLoadError, match="cannot read api_key_file"):
        OpenAIHttpEngine(options={"url": URL, "model": "m", "api_key_file": str(tmp_path / "absent")})


def test_request_body_maps_speaker_speed_and_instructions() -> None:
    engine = OpenAIHttpEngine(options={"url": URL, "model": "m", "voice": "nova"})
    plain = engine._body(SynthesisRequest(job_id="j", text="Hi."))
    assert plain == {"model": "m", "input": "Hi.", "voice": "nova", "response_format": "pcm", "stream": True}
    body = engine._body(SynthesisRequest(job_id="j", text="Hi.", speaker="aiden",
                                         voice={"length_scale": 0.5, "instructions": "calm"}))
    assert (body["voice"], body["speed"], body["instructions"]) == ("aiden", 2.0, "calm")
    assert engine._body(SynthesisRequest(job_id="j", text="Hi.", voice={"speed": 1.5}))["speed"] == 1.5
    with pytest.raises(EngineError):
        engine._body(SynthesisRequest(job_id="j", text="Hi.", voice={"speed": 9}))


def test_error_message_takes_the_servers_words() -> None:
    assert error_message(b'{"error": {"message": "input too long", "type": "x"}}', "Bad Request") == "input too long"
    assert error_message(b'{"detail": "voice not found"}', "Not Found") == "voice not found"
    assert error_message(b"plain\n  text", None) == "plain text"
    assert error_message(b"", "Bad Gateway") == "Bad Gateway"


def wav_header(rate: int, *, channels: int = 1, bits: int = 16, extra: bytes = b"") -> bytes:
    fmt = struct.pack("<4sIHHIIHH", b"fmt ", 16, 1, channels, rate, rate * channels * bits // 8,
                      channels * bits // 8, bits)
    return b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE" + fmt + extra + b"data" + struct.pack("<I", 0xFFFFFFFF)


def feed_all(body: PcmBody, pieces: list[bytes]) -> bytes:
    return b"".join(body.feed(piece) for piece in pieces)


def test_pcm_body_keeps_whole_samples_across_odd_pieces() -> None:
    audio = bytes(range(200))
    body = PcmBody(24000)
    assert feed_all(body, [audio[:1], audio[1:6], audio[6:7], audio[7:]]) == audio
    assert body.leftover() == 0 and not body.wav


def test_pcm_body_drops_a_matching_wav_header_split_anywhere() -> None:
    audio = bytes(range(100))
    listing = b"LIST" + struct.pack("<I", 5) + b"INFOx" + b"\0"  # an odd-sized chunk and its pad byte
    stream = wav_header(24000, extra=listing) + audio
    for cut in (1, 3, 11, 20, 40, len(stream) - 5):
        body = PcmBody(24000)
        assert feed_all(body, [stream[:cut], stream[cut:]]) == audio and body.wav


def test_pcm_body_refuses_wav_that_is_not_what_the_worker_announced() -> None:
    with pytest.raises(WavMismatch, match="set sample_rate=44100"):
        PcmBody(24000).feed(wav_header(44100) + b"\0\0")
    with pytest.raises(WavMismatch, match="2 channel"):
        PcmBody(24000).feed(wav_header(24000, channels=2) + b"\0\0")
