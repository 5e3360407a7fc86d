"""EngineHost and SynthesisRunner in-process with the tone TEST engine: load, jobs, reload, error codes."""

from __future__ import annotations

import threading
from typing import Any, Iterator, Mapping

import pytest

from tts_protocol import ErrorCode

from tts_worker.engine_host import EngineHost
from tts_worker.engines.base import AudioChunk, EngineError, EngineInfo, EngineLoadError, SynthesisRequest
from tts_worker.engines.tone import SAMPLE_RATE, ToneTestEngine
from tts_worker.settings import WorkerSettings
from tts_worker.synthesis import Chunk, Done, Event, Failed, SynthesisRunner, Task

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]

EVENT_WAIT_S = 5.0


def task(job_id: str, text: str = "One. Two.", *, stream: bool = False,
         cancel: threading.Event | None = None) -> Task:
    request = SynthesisRequest(job_id=job_id, text=text, stream=stream)
    return Task((job_id, 1), request, cancel or threading.Event(), stream)


def outcome(events: Any) -> list[Event]:
    """Events of one job up to and including its Done or Failed."""
    seen: list[Event] = []
    while not seen or isinstance(seen[-1], Chunk):
        seen.append(events.get(timeout=EVENT_WAIT_S))
    return seen


@pytest.fixture
def host() -> Iterator[EngineHost]:
    settings = WorkerSettings(engine="tone", name="unit", device="cpu")
    engine_host = EngineHost(settings, {"capacity": "1"}, lambda: None)
    engine_host.load()
    try:
        yield engine_host
    finally:
        assert engine_host.close(timeout_s=EVENT_WAIT_S)


def test_load_then_a_streaming_job_gives_chunks_then_done(host: EngineHost) -> None:
    assert (host.info.engine, host.info.model, host.info.sample_rate) == ("tone", "tone-v1", SAMPLE_RATE)
    host.submit(task("j1", "One. Two. Three.", stream=True))
    events = outcome(host.events)
    assert [type(e) for e in events] == [Chunk, Chunk, Chunk, Done]
    chunks, done = events[:3], events[3]
    assert isinstance(done, Done) and done.key == ("j1", 1) and done.deterministic
    assert [c.seq for c in chunks if isinstance(c, Chunk)] == [0, 1, 2]
    assert done.pcm == b"".join(c.pcm for c in chunks if isinstance(c, Chunk))
    assert host.stats() == {"jobs": 1, "chunks": 3, "warm": []}


def test_engine_errors_and_cancels_become_error_codes(host: EngineHost) -> None:
    failing = EngineHost(host.settings, {"fail_on": "BOOM"}, lambda: None)
    failing.load()
    try:
        failing.submit(task("j-fail", "It goes BOOM."))
        (failed,) = outcome(failing.events)
        assert isinstance(failed, Failed)
        assert (failed.code, failed.retryable, failed.cancelled) == (ErrorCode.ENGINE_ERROR, False, False)
        cancel = threading.Event()
        cancel.set()
        failing.submit(task("j-cancel", cancel=cancel))
        (cancelled,) = outcome(failing.events)
        assert isinstance(cancelled, Failed)
        assert (cancelled.code, cancelled.retryable, cancelled.cancelled) == (ErrorCode.CANCELLED, False, True)
    finally:
        assert failing.close(timeout_s=EVENT_WAIT_S)


def test_a_failed_reload_keeps_the_current_engine(host: EngineHost) -> None:
    engine = host.engine
    with pytest.raises(EngineLoadError, match="no_such_option"):
        host.reload({"no_such_option": "1"})
    assert host.engine is engine and host.options == {"capacity": "1"}
    host.submit(task("after-bad-reload"))
    assert isinstance(outcome(host.events)[-1], Done)


def test_a_reload_swaps_engine_and_threads_and_closes_the_old_engine(host: EngineHost) -> None:
    old = host.engine
    old_events = host.events
    loaded = host.reload(host.merged_options({"fail_on": "BOOM"}))
    assert host.engine is loaded.engine is not old and host.events is not old_events
    assert host.options == {"capacity": "1", "fail_on": "BOOM"}
    assert isinstance(old, ToneTestEngine) and old._loaded is False  # closed (the tone engine's own flag)
    host.submit(task("after-reload", "BOOM."))
    assert isinstance(outcome(host.events)[-1], Failed)


def test_merged_options_apply_a_reloads_changes(host: EngineHost) -> None:
    assert host.merged_options({"latency_s": 0.5}) == {"capacity": "1", "latency_s": 0.5}
    assert host.merged_options({"capacity": None}) == {}
    assert host.merged_options({"fail_on": "X"}, base={"latency_s": 1}) == {"latency_s": 1, "fail_on": "X"}
    assert host.options == {"capacity": "1"}  # only a successful reload changes the options


class CodedErrorEngine:
    """A plugin whose EngineError carries a code given as a plain string (as third-party code might)."""

    name = "coded"

    def __init__(self, code: Any) -> None:
        self.code = code

    def load(self) -> EngineInfo:
        return EngineInfo(engine=self.name, model="m", sample_rate=8000)

    def synthesize(self, request: SynthesisRequest, cancel: threading.Event) -> Iterator[AudioChunk]:
        raise EngineError("refused", code=self.code, retryable=True)
        yield  # pragma: no cover - makes this a generator like a real engine

    def stats(self) -> Mapping[str, Any]:
        return {}

    def close(self) -> None:
        pass


@pytest.mark.parametrize(("code", "expected"), [
    (ErrorCode.BAD_REQUEST, ErrorCode.BAD_REQUEST),
    ("internal", ErrorCode.INTERNAL),  # a protocol code as a string: kept
    ("out_of_cheese", ErrorCode.ENGINE_ERROR),  # not a protocol code: never reaches the wire
])
def test_a_plugins_error_code_is_always_a_protocol_code(code: Any, expected: ErrorCode) -> None:
    engine = CodedErrorEngine(code)
    runner = SynthesisRunner(engine, engine.load(), lambda: None)  # type: ignore[arg-type]
    try:
        runner.submit(task("j"))
        failed = runner.events.get(timeout=EVENT_WAIT_S)
        assert isinstance(failed, Failed) and failed.code is expected and failed.retryable
    finally:
        assert runner.stop(timeout_s=EVENT_WAIT_S)
