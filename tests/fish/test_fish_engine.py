"""FishSpeechEngine driven directly: real upstream loaders and generation on tiny random checkpoints (CPU)."""

from __future__ import annotations

import gc
import sys
import threading
import weakref
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from fishkit import FAMILIES, FAST, SAMPLES_PER_FRAME, SKIP_REASON, fish_available, make_engine, run, tiny_dir, voices

pytestmark = [pytest.mark.skipif(not fish_available(), reason=SKIP_REASON), pytest.mark.timeout(120)]
_ = (make_engine, tiny_dir, voices)  # fixtures used by name

from tts_worker.engines.base import EngineError, SynthesisCancelled  # noqa: E402

TEXT = "Hello world. This is a test."
FAST_FRAMES = FAST["max_new_tokens"]
LONG_TEXT = ("The first sentence is here and it is long enough. The second sentence follows right after it. "
             "A third one closes the paragraph for good.")


@pytest.mark.parametrize("family", FAMILIES)
def test_load_reports_the_model(make_engine: Callable[..., Any], family: str) -> None:
    engine = make_engine(family, load=False)
    info = engine.load()
    assert (info.engine, info.model, info.sample_rate, info.device, info.capacity) == (
        "fish-speech", family, 44100, "cpu", 1)
    assert info.extra["precision"] == "fp32" and "CC-BY-NC-SA-4.0" in info.licence


@pytest.mark.parametrize("family", FAMILIES)
def test_default_voice_audio_comes_back(make_engine: Callable[..., Any], family: str) -> None:
    engine = make_engine(family)
    chunks = run(engine, TEXT, voice={"seed": 3})
    audio = np.concatenate(chunks)
    assert audio.dtype == np.int16
    assert 0 < audio.size <= FAST_FRAMES * SAMPLES_PER_FRAME
    assert np.abs(audio.astype(np.int32)).max() > 0
    assert run(engine, TEXT, speaker="default", voice={"seed": 3})  # "default" = no reference, not an error


@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_same_audio_other_seed_other_audio(make_engine: Callable[..., Any], family: str) -> None:
    engine = make_engine(family)
    first = np.concatenate(run(engine, TEXT, voice={"seed": 42}))
    run(engine, "Something else in between.", voice={"seed": 5})
    again = np.concatenate(run(engine, TEXT, voice={"seed": 42}))
    other = np.concatenate(run(engine, TEXT, voice={"seed": 43}))
    assert first.tobytes() == again.tobytes()
    assert first.tobytes() != other.tobytes()


@pytest.mark.parametrize("family", FAMILIES)
def test_streaming_yields_one_chunk_per_segment(make_engine: Callable[..., Any], family: str) -> None:
    engine = make_engine(family)
    chunks = run(engine, LONG_TEXT, voice={"seed": 1, "chunk_length": 60, "max_new_tokens": 6})
    assert len(chunks) >= 2
    assert all(c.size > 0 for c in chunks)
    whole = run(engine, LONG_TEXT, voice={"seed": 1, "chunk_length": 1000, "max_new_tokens": 6})
    assert len(whole) == 1


@pytest.mark.parametrize("family", FAMILIES)
def test_reference_tokens_are_cached_in_memory_and_on_disk(make_engine: Callable[..., Any], voices: Path,
                                                           family: str) -> None:
    engine = make_engine(family)
    assert engine.stats()["warm"] == []
    run(engine, TEXT, speaker="alice")
    stats = engine.stats()
    assert (stats["references_encoded"], stats["cache_misses"], stats["cache_hits"]) == (1, 1, 0)
    assert stats["warm"] == ["alice"]
    run(engine, TEXT, speaker="alice")
    stats = engine.stats()
    assert (stats["references_encoded"], stats["cache_hits"]) == (1, 1)
    run(engine, TEXT, speaker="bob")  # two reference pairs
    assert engine.stats()["references_encoded"] == 3
    assert engine.stats()["warm"] == ["alice", "bob"]

    fresh = make_engine(family)  # same disk cache: nothing is encoded again
    run(fresh, TEXT, speaker="bob")
    stats = fresh.stats()
    assert (stats["references_encoded"], stats["cache_disk_hits"]) == (0, 2)
    assert stats["warm"] == ["bob"]


def test_changed_reference_is_encoded_again(make_engine: Callable[..., Any], voices: Path) -> None:
    engine = make_engine("s1-mini")
    run(engine, TEXT, speaker="alice")
    (voices / "alice" / "reference.txt").write_text("A different transcript.", encoding="utf-8")
    run(engine, TEXT, speaker="alice")
    assert engine.stats()["references_encoded"] == 2


def test_lru_is_bounded_and_warm_follows_it(make_engine: Callable[..., Any], voices: Path) -> None:
    engine = make_engine("s1-mini", token_cache_entries=2, token_cache_dir="none")
    run(engine, TEXT, speaker="alice")
    run(engine, TEXT, speaker="carol")
    assert engine.stats()["warm"] == ["alice", "carol"]
    run(engine, TEXT, speaker="bob")
    stats = engine.stats()
    assert stats["warm"] == ["bob"] and stats["cache_size"] == 2 and stats["cache_evictions"] == 2


def test_cache_off_encodes_every_time(make_engine: Callable[..., Any], voices: Path) -> None:
    engine = make_engine("1.5", token_cache="false")
    run(engine, TEXT, speaker="alice")
    run(engine, TEXT, speaker="alice")
    stats = engine.stats()
    assert stats["references_encoded"] == 2 and stats["warm"] == [] and stats["token_cache"] is False


def test_preload_makes_voices_warm_at_load(make_engine: Callable[..., Any], voices: Path) -> None:
    engine = make_engine("1.5", preload_voices="*")
    assert engine.stats()["warm"] == ["alice", "bob", "carol"]


@pytest.mark.parametrize("speaker, fragment", [("nobody", "unknown speaker 'nobody'"),
                                               ("../alice", "not valid"), ("empty", "no reference audio")])
def test_unknown_or_bad_speaker_is_an_engine_error(make_engine: Callable[..., Any], voices: Path, speaker: str,
                                                   fragment: str) -> None:
    (voices / "empty").mkdir()
    engine = make_engine("s1-mini")
    with pytest.raises(EngineError, match=fragment.replace(".", r"\.")):
        run(engine, TEXT, speaker=speaker)
    assert run(engine, TEXT)  # the engine keeps working


def test_reference_without_transcript_or_too_short(make_engine: Callable[..., Any], voices: Path) -> None:
    import soundfile

    from fishkit import tone

    (voices / "dave").mkdir()
    soundfile.write(voices / "dave" / "reference.wav", tone(1.0, 16000, 200), 16000)
    (voices / "eve").mkdir()
    soundfile.write(voices / "eve" / "reference.wav", tone(0.05, 16000, 200), 16000)
    (voices / "eve" / "reference.txt").write_text("Too short.")
    engine = make_engine("s1-mini")
    with pytest.raises(EngineError, match="no transcript"):
        run(engine, TEXT, speaker="dave")
    with pytest.raises(EngineError, match="at least"):
        run(engine, TEXT, speaker="eve")


@pytest.mark.parametrize("voice", [
    {"temperature": 5}, {"temperature": True}, {"top_p": 0}, {"repetition_penalty": 3.0},
    {"max_new_tokens": 0}, {"max_new_tokens": 10_000}, {"chunk_length": 10}, {"seed": -1}, {"seed": "abc"},
    {"seed": 1.5},
])
def test_out_of_range_voice_settings_are_engine_errors(make_engine: Callable[..., Any], voice: dict) -> None:
    engine = make_engine("1.5")
    with pytest.raises(EngineError):
        run(engine, TEXT, voice=voice)


def test_unrelated_voice_keys_are_ignored(make_engine: Callable[..., Any]) -> None:
    assert run(make_engine("1.5"), TEXT, voice={"length_scale": 1.2, "seed": 1})


@pytest.mark.parametrize("family", FAMILIES)
def test_cancel_before_and_between_segments(make_engine: Callable[..., Any], family: str) -> None:
    from tts_worker.engines.base import SynthesisRequest

    engine = make_engine(family)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(SynthesisCancelled):
        run(engine, TEXT, cancel=cancel)
    cancel = threading.Event()
    request = SynthesisRequest(job_id="c", text=LONG_TEXT, voice={"chunk_length": 60, "max_new_tokens": 6})
    stream = engine.synthesize(request, cancel)
    next(stream)
    cancel.set()
    with pytest.raises(SynthesisCancelled):
        list(stream)
    assert run(engine, TEXT)  # the next job runs normally


@pytest.mark.parametrize("family", FAMILIES)
def test_close_frees_the_models_and_a_new_engine_loads(make_engine: Callable[..., Any], family: str) -> None:
    engine = make_engine(family)
    llm_ref = weakref.ref(engine._llm.model)
    codec_ref = weakref.ref(engine._codec)
    engine.close()
    engine.close()  # idempotent
    gc.collect()
    assert llm_ref() is None and codec_ref() is None
    assert engine.stats() == {}
    with pytest.raises(EngineError, match="not loaded"):
        run(engine, TEXT)
    again = make_engine(family)  # hot reload builds a new instance in the same process
    assert run(again, TEXT)


def test_nothing_touches_the_network(make_engine: Callable[..., Any], voices: Path) -> None:
    events: list[tuple[str, Any]] = []
    watching = threading.Event()

    def hook(event: str, args: Any) -> None:
        if watching.is_set() and event in ("socket.connect", "socket.getaddrinfo", "socket.sendto",
                                           "urllib.Request"):
            events.append((event, args))

    sys.addaudithook(hook)  # audit hooks cannot be removed: this one is inert once `watching` is cleared
    watching.set()
    try:
        for family in FAMILIES:
            engine = make_engine(family)
            run(engine, TEXT, speaker="alice")
    finally:
        watching.clear()
    assert events == []


def test_warmup_runs_at_load(make_engine: Callable[..., Any]) -> None:
    engine = make_engine("s1-mini", warmup="true")
    assert engine.stats()["jobs"] == 0  # the warm-up is not a job
    assert run(engine, TEXT)
