"""The Fish engine's own small parts: text splitting, version names, the token cache's disk format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fishkit import SKIP_REASON, fish_available

pytestmark = [pytest.mark.skipif(not fish_available(), reason=SKIP_REASON), pytest.mark.timeout(60)]

from tts_worker.engines.base import EngineLoadError  # noqa: E402
from tts_worker.engines.fish_speech.checkpoint import Family, parse_model_version  # noqa: E402
from tts_worker.engines.fish_speech.text import split_text  # noqa: E402
from tts_worker.engines.fish_speech.token_cache import SemanticTokenCache, cache_key  # noqa: E402


def test_split_keeps_sentences_together_up_to_the_limit() -> None:
    text = "One two three. Four five six! Seven eight nine? Ten."
    assert split_text(text, 1000) == [text]
    assert split_text(text, 30) == ["One two three. Four five six!", "Seven eight nine? Ten."]
    assert split_text("   ", 100) == []


@pytest.mark.parametrize("limit", [4, 10, 25, 60])
def test_split_never_exceeds_the_byte_limit_and_loses_nothing(limit: int) -> None:
    text = ("Ünïcödé wörds, with clauses; and a verylongwordthatdoesnotfitanywhere. 日本語の文章です。"
            "Another line\nwith a break.")
    parts = split_text(text, limit)
    assert all(len(p.encode("utf-8")) <= limit for p in parts)
    assert "".join(parts).replace(" ", "") == "".join(text.split())


@pytest.mark.parametrize("name, family", [("1.5", Family.V1_5), ("fish-speech-1.5", Family.V1_5),
                                          ("S1-mini", Family.S1_MINI), ("openaudio-s1-mini", Family.S1_MINI),
                                          ("auto", None)])
def test_model_version_names(name: str, family: Family | None) -> None:
    assert parse_model_version(name) is family


@pytest.mark.parametrize("name", ["1.4", "s2", "s2-pro", ""])
def test_unknown_model_versions_are_refused(name: str) -> None:
    with pytest.raises(EngineLoadError):
        parse_model_version(name)


def test_cache_key_covers_every_part() -> None:
    base = cache_key("1.5", "codec", "audio", "text")
    assert len({base, cache_key("s1-mini", "codec", "audio", "text"), cache_key("1.5", "codec2", "audio", "text"),
                cache_key("1.5", "codec", "audio2", "text"), cache_key("1.5", "codec", "audio", "text2")}) == 5


def test_disk_entries_are_checked_and_rewritten(tmp_path: Path) -> None:
    meta = {"family": "1.5", "codec_sha256": "c", "audio_sha256": "a", "transcript": "hi"}
    key = cache_key("1.5", "c", "a", "hi")
    codes = np.arange(24, dtype=np.int32).reshape(8, 3)
    SemanticTokenCache(max_entries=4, disk_dir=tmp_path).put(key, codes, meta)

    reader = SemanticTokenCache(max_entries=4, disk_dir=tmp_path)
    assert np.array_equal(reader.get(key, meta), codes)
    assert reader.stats()["cache_disk_hits"] == 1

    side = json.loads((tmp_path / f"{key}.json").read_text())
    side["transcript"] = "tampered"
    (tmp_path / f"{key}.json").write_text(json.dumps(side))
    (tmp_path / f"{key}.npy").write_bytes(b"garbage")
    fresh = SemanticTokenCache(max_entries=4, disk_dir=tmp_path)
    assert fresh.get(key, meta) is None
    assert fresh.stats()["cache_misses"] == 1
    assert not list(tmp_path.glob(".*.tmp"))


def test_reload_may_send_model_version_as_a_number() -> None:
    from tts_worker.engines.fish_speech import FishSpeechEngine

    assert FishSpeechEngine(options={"model_version": 1.5}).expected_family is Family.V1_5
