"""Batched generation (`max_batch=N`): a job's audio does not depend on its batch mates, cancel and failure
stay within their row, the batch is sized by memory, and a worker advertises the batch as its capacity."""

from __future__ import annotations

import threading
from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pytest

from fishkit import (
    FAMILIES,
    FOLDERS,
    SKIP_REASON,
    fish_available,
    make_engine,
    tiny_dir,
    voices,
    write_voices,
)
from harness import BrokerProc, Proc, wait_for

pytestmark = [pytest.mark.skipif(not fish_available(), reason=SKIP_REASON), pytest.mark.timeout(180)]
_ = (make_engine, tiny_dir, voices)

TEXTS = [
    "Hello world, this is a test.",
    "Short.",
    "A somewhat longer sentence goes here, with a clause. And another one follows it!",
    "Numbers one two three.",
    "What is this?",
    "Okay then.",
    "The quick brown fox jumps over the lazy dog. " * 7,  # > 256 prompt tokens: batch mates attend wider
    "Bye now.",
]
WIDE = 6  # TEXTS[WIDE] runs as one segment (chunk_length 1000), so its row's span bucket is 512, not 256
LONG_TEXT = ("The first sentence is here and it is long enough. The second sentence follows right after it. "
             "A third one closes the paragraph for good. And a fourth, to be sure.")


def outcome(engine: Any, text: str, voice: dict[str, Any], speaker: Optional[str] = None,
            cancel: Optional[threading.Event] = None, job_id: str = "t") -> Any:
    """The job's int16 chunks, or its error as (type name, message)."""
    from tts_worker.engines.base import SynthesisRequest

    request = SynthesisRequest(job_id=job_id, text=text, speaker=speaker, voice=voice)
    try:
        return [chunk.samples for chunk in engine.synthesize(request, cancel or threading.Event())]
    except Exception as exc:  # compared as a value: a job may fail the same way alone and in a batch
        return (type(exc).__name__, str(exc))


def same(a: Any, b: Any) -> bool:
    if isinstance(a, tuple) or isinstance(b, tuple):
        return a == b
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def concurrently(jobs: list[Callable[[], Any]]) -> list[Any]:
    results: list[Any] = [None] * len(jobs)

    def run(i: int) -> None:
        results[i] = jobs[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(t.is_alive() for t in threads), "a batched job did not finish"
    return results


def voice(i: int, **extra: Any) -> dict[str, Any]:
    wide = {"chunk_length": 1000} if i == WIDE else {}
    return {"seed": 1000 + i, "max_new_tokens": 24 + 4 * i, **wide, **extra}


@pytest.mark.parametrize("family", FAMILIES)
def test_a_job_sounds_the_same_alone_and_in_a_batch_of_8(make_engine: Callable[..., Any], voices: Path,
                                                         family: str) -> None:
    engine = make_engine(family, max_batch=8, torch_threads=1)
    info_stats = engine.stats()
    assert info_stats["max_batch"] == 8 and info_stats["max_batch_effective"] == 8
    speakers = [None, "alice", None, None, "bob", None, None, None]  # references in the batch too
    alone = [outcome(engine, TEXTS[i], voice(i), speakers[i], job_id=f"alone-{i}") for i in range(8)]
    assert engine.stats()["batch_peak_rows"] == 1
    assert sum(isinstance(a, list) and len(a) > 0 for a in alone) >= 6  # the tiny model rarely stops at once
    together = concurrently([partial(outcome, engine, TEXTS[i], voice(i), speakers[i], job_id=f"b-{i}")
                             for i in range(8)])
    stats = engine.stats()
    assert stats["batch_peak_rows"] >= 4, stats  # they really ran side by side
    for i in range(8):
        assert same(alone[i], together[i]), f"job {i} differs in the batch"
    # A different seed in the same batch shape gives different audio (the comparison can fail).
    other = outcome(engine, TEXTS[0], voice(0, seed=7))
    assert not same(other, alone[0])


def test_cancelling_one_row_leaves_the_others_intact(make_engine: Callable[..., Any]) -> None:
    engine = make_engine("s1-mini", max_batch=8, torch_threads=1)
    alone = [outcome(engine, TEXTS[i], voice(i)) for i in range(1, 8)]
    cancel = threading.Event()
    first_chunk = threading.Event()
    from tts_worker.engines.base import SynthesisCancelled, SynthesisRequest

    def long_job() -> Any:
        request = SynthesisRequest(job_id="long", text=LONG_TEXT,
                                   voice={"seed": 5, "chunk_length": 50, "max_new_tokens": 16})
        chunks = []
        try:
            for chunk in engine.synthesize(request, cancel):
                chunks.append(chunk)
                first_chunk.set()
                cancel.set()  # cancel after the first segment: the next ones must not come
            return ("done", len(chunks))
        except SynthesisCancelled:
            return ("cancelled", len(chunks))
        finally:
            first_chunk.set()

    results = concurrently([long_job, *[partial(outcome, engine, TEXTS[i], voice(i)) for i in range(1, 8)]])
    assert results[0] == ("cancelled", 1)
    for i in range(1, 8):
        assert same(alone[i - 1], results[i]), f"job {i} changed when its batch mate was cancelled"
    assert engine.stats()["batch_rows"] == 0


def test_a_failing_row_does_not_fail_its_batch_mates(make_engine: Callable[..., Any], voices: Path) -> None:
    engine = make_engine("s1-mini", max_batch=8, torch_threads=1)
    alone = [outcome(engine, TEXTS[0], voice(0, max_new_tokens=60)),
             *[outcome(engine, TEXTS[i], voice(i)) for i in range(1, 4)]]
    gate = threading.Event()

    def late(job: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            gate.wait(30)  # join while the others are mid-generation
            return job()
        return run

    def watcher() -> Any:
        wait_for(lambda: engine.stats()["batch_rows"] >= 2, 30, what="batch running")
        gate.set()
        return None

    jobs: list[Callable[[], Any]] = [
        lambda: outcome(engine, TEXTS[0], voice(0, max_new_tokens=60)),
        *[partial(outcome, engine, TEXTS[i], voice(i)) for i in range(1, 4)],
        late(lambda: outcome(engine, "Who am I?", voice(9), speaker="nobody")),  # unknown speaker
        late(lambda: outcome(engine, "x" * 1000 + ".", voice(9, chunk_length=1000))),  # prompt too long for S1
        late(lambda: outcome(engine, "Too hot.", {"temperature": 9})),  # bad setting
        watcher,
    ]
    results = concurrently(jobs)
    for i in range(4):
        assert same(alone[i], results[i]), f"job {i} changed when a batch mate failed"
    assert results[4][0] == "EngineError" and "unknown speaker 'nobody'" in results[4][1]
    assert results[5][0] == "EngineError" and "prompt too long" in results[5][1]
    assert results[6][0] == "EngineError"
    assert engine.stats()["batch_rows"] == 0


def test_the_batch_is_capped_by_its_memory_budget(make_engine: Callable[..., Any]) -> None:
    engine = make_engine("1.5", max_batch=8, batch_memory_mb=3, torch_threads=1)
    stats = engine.stats()
    per_row = stats["kv_bytes_per_row"]
    assert per_row > 0 and stats["kv_budget_bytes"] == 3 * 2**20
    assert stats["max_batch_effective"] == min(8, 3 * 2**20 // per_row) < 8
    assert stats["kv_bytes"] == per_row * stats["max_batch_effective"]  # the estimate is what was allocated
    # Without a budget the batch is sized from the available RAM: all 8 rows of a tiny model fit.
    roomy = make_engine("1.5", max_batch=8, torch_threads=1).stats()
    assert roomy["max_batch_effective"] == 8 and roomy["kv_budget_bytes"] > 8 * per_row


def test_a_batched_worker_advertises_its_batch_and_serves_jobs_side_by_side(
        broker: BrokerProc, start_worker: Callable[..., Proc], make_client: Callable[..., Any],
        tiny_dir: Path, tmp_path: Path) -> None:
    write_voices(tmp_path / "voices")
    client = make_client(broker.frontend, timeout_s=90.0)
    options = {"checkpoint": tiny_dir / FOLDERS["1.5"], "model_version": "1.5", "voices_dir": tmp_path / "voices",
               "token_cache_dir": tmp_path / "token-cache", "torch_threads": 1, "max_batch": 4}
    proc = start_worker(broker, engine="fish-speech", opts=options)
    wait_for(lambda: any(w.engine == "fish-speech" for w in client.broker_status(timeout_s=2).workers)
             or not proc.alive(), 90, what="fish worker registered")
    assert proc.alive(), f"fish worker exited:\n{proc.log()}"
    worker = next(w for w in client.broker_status().workers if w.engine == "fish-speech")
    assert worker.capacity == 4
    texts = TEXTS[:4]
    alone = [client.synthesize(t, voice=voice(i)).pcm for i, t in enumerate(texts)]
    together = concurrently([partial(lambda t, v: client.synthesize(t, voice=v).pcm, texts[i], voice(i))
                             for i in range(4)])
    assert together == alone
    # Streaming: one PARTIAL per segment while other jobs share the batch.
    with client.stream(LONG_TEXT, voice={"seed": 1, "chunk_length": 60, "max_new_tokens": 6}) as stream:
        mates = concurrently([partial(lambda t, v: client.synthesize(t, voice=v).pcm, texts[i], voice(i))
                              for i in range(2)])
        chunks = list(stream)
        result = stream.result
    assert len(chunks) >= 2 and [c.seq for c in chunks] == list(range(len(chunks)))
    assert b"".join(c.pcm for c in chunks) == result.pcm
    assert mates == alone[:2]
    assert "batched decoding: 4 row(s)" in proc.log()
    assert proc.alive()
