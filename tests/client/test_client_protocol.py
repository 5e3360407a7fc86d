"""The client against a scripted broker (a real ROUTER socket driven by the test).

This pins down what a real broker rarely shows on cue: partials from a retried attempt, duplicate RESULTs,
a broker_id that changes, retryable errors, a silent broker and garbage frames.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import pytest

from tts_protocol import Command

from tts_client import JobFailed, QueueFull, TtsClient

from harness import wait_for
from peers import ScriptedBroker

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]


def fmt(job_id: str, attempt: int, seq: int) -> dict[str, Any]:
    return {"job_id": job_id, "attempt": attempt, "seq": seq, "sample_rate": 16000, "channels": 1,
            "sample_format": "s16le"}


def result_body(job_id: str, attempt: int, pcm: bytes) -> dict[str, Any]:
    return {"job_id": job_id, "attempt": attempt, "worker_id": "w-x", "engine": "tone", "model": "m",
            "sample_rate": 16000, "channels": 1, "sample_format": "s16le", "num_samples": len(pcm) // 2}


def test_retried_attempt_skips_chunks_already_delivered(scripted: ScriptedBroker,
                                                         make_client: Callable[..., TtsClient]) -> None:
    client = make_client(scripted.url)
    stream = client.stream("three chunks", job_id="s1")
    ident, submit = scripted.recv(Command.SUBMIT)
    assert submit.body.job_id == "s1" and submit.body.stream
    a, b, c = b"\x01\x00" * 10, b"\x02\x00" * 10, b"\x03\x00" * 10
    scripted.send_to(ident, Command.ACCEPTED, {"job_id": "s1", "state": "running", "queue_depth": 0})
    scripted.send_to(ident, Command.PARTIAL, fmt("s1", 1, 0), a)
    scripted.send_to(ident, Command.PARTIAL, fmt("s1", 1, 1), b)
    # worker died: attempt 2 starts again from seq 0 (same deterministic audio), a stale attempt-1 chunk after it
    scripted.send_to(ident, Command.PARTIAL, fmt("s1", 2, 0), a)
    scripted.send_to(ident, Command.PARTIAL, fmt("s1", 1, 2), b"\x09\x00" * 10)
    scripted.send_to(ident, Command.PARTIAL, fmt("s1", 2, 1), b)
    scripted.send_to(ident, Command.PARTIAL, fmt("s1", 2, 2), c)
    scripted.send_to(ident, Command.PARTIAL, fmt("s1", 2, 2), c)  # a repeat
    scripted.send_to(ident, Command.RESULT, result_body("s1", 2, a + b + c), a + b + c)
    scripted.send_to(ident, Command.RESULT, result_body("s1", 2, a + b + c), a + b + c)  # a duplicate
    chunks = list(stream)
    assert [(ch.attempt, ch.seq, ch.pcm) for ch in chunks] == [(1, 0, a), (1, 1, b), (2, 2, c)]
    assert stream.result.pcm == a + b + c and stream.result.meta.attempt == 2


def test_missed_partials_are_filled_from_the_result(scripted: ScriptedBroker,
                                                    make_client: Callable[..., TtsClient]) -> None:
    client = make_client(scripted.url)
    stream = client.stream("gap", job_id="gap")
    ident, _ = scripted.recv(Command.SUBMIT)
    a, b, c = b"\x01\x00" * 4, b"\x02\x00" * 4, b"\x03\x00" * 4
    scripted.send_to(ident, Command.PARTIAL, fmt("gap", 1, 0), a)
    scripted.send_to(ident, Command.PARTIAL, fmt("gap", 1, 2), c)  # seq 1 never came
    scripted.send_to(ident, Command.RESULT, result_body("gap", 1, a + b + c), a + b + c)
    assert b"".join(ch.pcm for ch in stream) == a + b + c


def test_new_broker_id_resubmits_unfinished_jobs(scripted: ScriptedBroker,
                                                 make_client: Callable[..., TtsClient]) -> None:
    client = make_client(scripted.url, ping_interval_s=0.2, resubmit_after_s=30)
    done = client.submit("finished before restart", job_id="r-done")
    pending = client.submit("still running", job_id="r-pending")
    ident, first = scripted.recv(Command.SUBMIT)
    _, second = scripted.recv(Command.SUBMIT)
    assert {first.body.job_id, second.body.job_id} == {"r-done", "r-pending"}
    pcm = b"\x05\x00" * 8
    scripted.send_to(ident, Command.RESULT, result_body("r-done", 1, pcm), pcm)
    assert done.result().pcm == pcm
    scripted.pings_first(2)  # and no SUBMIT: the client learns "b-one"
    wait_for(lambda: client.broker_id == "b-one", 5, what="the client learns the broker id")
    scripted.broker_id = "b-two"  # the broker "restarted"
    _, again = scripted.recv(Command.SUBMIT, timeout_s=5)
    assert again.body.job_id == "r-pending" and again.body.text == "still running"
    scripted.pings_first(2)  # resubmitted once only, and never the finished job
    scripted.send_to(ident, Command.RESULT, result_body("r-pending", 1, pcm), pcm)
    assert pending.result().job_id == "r-pending"


def test_silent_job_is_resubmitted_with_the_same_id(scripted: ScriptedBroker,
                                                    make_client: Callable[..., TtsClient]) -> None:
    client = make_client(scripted.url, resubmit_after_s=0.5)
    handle = client.submit("reply lost", job_id="lost-1")
    ident, first = scripted.recv(Command.SUBMIT)
    started = time.monotonic()
    _, again = scripted.recv(Command.SUBMIT, timeout_s=5)
    assert again.body == first.body and time.monotonic() - started >= 0.4
    pcm = b"\x07\x00" * 2
    scripted.send_to(ident, Command.RESULT, result_body("lost-1", 1, pcm), pcm)
    assert handle.result().pcm == pcm


def test_retryable_errors_are_retried_with_backoff(scripted: ScriptedBroker,
                                                   make_client: Callable[..., TtsClient]) -> None:
    client = make_client(scripted.url, retry_backoff_initial_s=0.1)
    handle = client.submit("busy broker", job_id="busy")
    ident, _ = scripted.recv(Command.SUBMIT)
    times = [time.monotonic()]
    for code in ("queue_full", "no_workers", "shutting_down"):
        scripted.send_to(ident, Command.ERROR, {"job_id": "busy", "code": code, "message": "try later",
                                             "retryable": True})
        scripted.recv(Command.SUBMIT)
        times.append(time.monotonic())
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert gaps[0] >= 0.07 and gaps[2] > gaps[0]  # backoff grows
    assert scripted.retries == ["busy"] * 3  # each resubmission first asks to requeue a retained failure
    pcm = b"\x01\x00"
    scripted.send_to(ident, Command.RESULT, result_body("busy", 1, pcm), pcm)
    assert handle.result().pcm == pcm


def test_queue_full_until_the_timeout_raises_queue_full(scripted: ScriptedBroker,
                                                        make_client: Callable[..., TtsClient]) -> None:
    client = make_client(scripted.url, retry_backoff_initial_s=0.05, retry_backoff_max_s=0.1)
    handle = client.submit("never fits", job_id="full", timeout_s=1.0)
    deadline = time.monotonic() + 3
    with pytest.raises(QueueFull) as info:
        while time.monotonic() < deadline:
            try:
                ident, _ = scripted.recv(Command.SUBMIT, timeout_s=0.3)
            except AssertionError:
                handle.result()  # the client gave up: this raises
                continue
            scripted.send_to(ident, Command.ERROR, {"job_id": "full", "code": "queue_full", "retryable": True})
        handle.result()
    assert info.value.code == "queue_full" and info.value.retryable


def test_non_retryable_error_fails_once(scripted: ScriptedBroker, make_client: Callable[..., TtsClient]) -> None:
    client = make_client(scripted.url)
    handle = client.submit("bad", job_id="bad-1")
    ident, _ = scripted.recv(Command.SUBMIT)
    scripted.send_to(ident, Command.ERROR, {"job_id": "bad-1", "code": "bad_request", "message": "text too long"})
    with pytest.raises(JobFailed) as info:
        handle.result()
    assert (info.value.code, info.value.message, info.value.retryable) == ("bad_request", "text too long", False)
    pcm = b"\x01\x00"
    scripted.send_to(ident, Command.RESULT, result_body("bad-1", 1, pcm), pcm)  # a late result changes nothing
    assert isinstance(handle.future.exception(), JobFailed)


def test_garbage_from_the_broker_is_dropped(scripted: ScriptedBroker, make_client: Callable[..., TtsClient]) -> None:
    client = make_client(scripted.url)
    handle = client.submit("after garbage", job_id="g1")
    ident, _ = scripted.recv(Command.SUBMIT)
    for frames in ([b"x"], [b"TTSC2\x13", b"\xc1"], [b"NOPE!\x13", b"\x80"],
                   [b"TTSC2\x13", b"\x80"], [b"TTSC2\x7f", b"\x80"],
                   [b"TTSC2\x01", b"\x80"]):
        scripted.send_raw(ident, frames)
    pcm = b"\x02\x00" * 3
    scripted.send_to(ident, Command.RESULT, result_body("g1", 1, pcm), pcm)
    assert handle.result().pcm == pcm
    second = client.submit("still alive", job_id="g2")  # the I/O thread survived
    ident, _ = scripted.recv(Command.SUBMIT)
    scripted.send_to(ident, Command.RESULT, result_body("g2", 1, pcm), pcm)
    assert second.result().job_id == "g2"
