"""The openai-http engine's options and request body, in-process (no server needed: nothing is loaded)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tts_worker.engines.base import EngineError, EngineLoadError, SynthesisRequest
from tts_worker.engines.openai_http import OpenAIHttpEngine
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
