"""TtsClient and AsyncTtsClient against a real broker and real tone test workers."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import soundfile

from tts_protocol.constants import JobState

from tts_client import (
    AsyncTtsClient,
    BrokerUnavailable,
    ClientClosed,
    InvalidRequest,
    JobCancelled,
    JobFailed,
    JobTimeout,
    NotFound,
    TtsClient,
    save_line,
)

from harness import TONE_RATE, BrokerProc, tone_frames, wait_for

pytestmark = pytest.mark.timeout(90)

TEXT = "Hello, world! This is a test. Short."


def test_single_job_returns_audio_and_metadata(broker: BrokerProc, client: TtsClient, tone_workers) -> None:
    tone_workers(broker)
    result = client.synthesize(TEXT, speaker="narrator", job_id="single-1")
    assert result.job_id == "single-1"
    assert (result.sample_rate, result.channels) == (TONE_RATE, 1)
    assert result.num_frames == tone_frames(TEXT)
    assert result.meta.engine == "tone" and result.meta.worker_id.startswith("w-")
    assert result.meta.num_samples == result.num_frames and result.meta.attempt == 1
    samples = result.to_numpy()
    assert samples.dtype == np.int16 and samples.shape == (result.num_frames,) and np.abs(samples).max() > 1000
    assert result.metadata["job_id"] == "single-1"
    # voice settings reach the engine: length_scale stretches the tone
    slow = client.synthesize(TEXT, voice={"length_scale": 2.0})
    assert slow.num_frames == tone_frames(TEXT, 2.0)


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg", "mp3"])
def test_every_output_format_is_readable(broker: BrokerProc, client: TtsClient, tone_workers, tmp_path: Path,
                                         fmt: str) -> None:
    tone_workers(broker)
    result = client.synthesize(TEXT)
    path = save_line(result, tmp_path / "out", 3, "line-7", fmt)
    assert path == (tmp_path / "out" / f"3_line-7.{fmt}").resolve()
    info = soundfile.info(str(path))
    assert info.samplerate == TONE_RATE and info.channels == 1
    if fmt in ("wav", "flac"):
        assert info.frames == result.num_frames
        data, _ = soundfile.read(str(path), dtype="int16")
        assert np.array_equal(data, result.to_numpy())
    else:  # lossy codecs pad a little
        assert abs(info.duration - result.duration_s) < 0.1
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind


def test_stream_yields_chunks_that_add_up_to_the_result(broker: BrokerProc, client: TtsClient, tone_workers) -> None:
    tone_workers(broker)
    with client.stream(TEXT, speaker="s") as stream:
        chunks = list(stream)
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    assert len(chunks) == 3  # one chunk per sentence
    assert b"".join(c.pcm for c in chunks) == stream.result.pcm
    assert sum(c.num_frames for c in chunks) == tone_frames(TEXT)


def test_many_jobs_in_flight_from_several_threads(broker: BrokerProc, client: TtsClient, tone_workers) -> None:
    tone_workers(broker, n=2)
    handles = [client.submit(f"Line number {i}.", job_id=f"many-{i}") for i in range(60)]
    results = [h.result() for h in handles]
    assert [r.job_id for r in results] == [f"many-{i}" for i in range(60)]
    assert all(r.num_frames == tone_frames(f"Line number {i}.") for i, r in enumerate(results))
    assert len({r.meta.worker_id for r in results}) == 2


def test_cancel_running_and_queued_jobs(broker: BrokerProc, client: TtsClient, tone_workers) -> None:
    tone_workers(broker, latency_s=30)
    running = client.submit("slow one", job_id="cancel-running")
    queued = client.submit("queued one", job_id="cancel-queued")
    wait_for(lambda: client.job_status("cancel-running").state is JobState.RUNNING, 20, what="job running")
    started = time.monotonic()
    running.cancel()
    client.cancel("cancel-queued")
    for handle in (running, queued):
        with pytest.raises(JobCancelled) as info:
            handle.result()
        assert info.value.code == "cancelled" and not info.value.retryable
    assert time.monotonic() - started < 10
    assert client.job_status("cancel-queued").state is JobState.CANCELLED


def test_timeout_raises_job_timeout_and_cancels_on_the_broker(broker: BrokerProc, client: TtsClient,
                                                             tone_workers) -> None:
    tone_workers(broker, latency_s=30)
    started = time.monotonic()
    with pytest.raises(JobTimeout) as info:
        client.synthesize("too slow", job_id="times-out", timeout_s=1.0)
    assert isinstance(info.value, TimeoutError) and info.value.job_id == "times-out"
    assert 0.9 < time.monotonic() - started < 5
    wait_for(lambda: client.job_status("times-out").state is JobState.CANCELLED, 10, what="broker cancelled it")


def test_engine_error_is_job_failed_with_code(broker: BrokerProc, client: TtsClient, tone_workers) -> None:
    tone_workers(broker, fail_on="BOOM")
    with pytest.raises(JobFailed) as info:
        client.synthesize("this goes BOOM")
    assert info.value.code == "engine_error" and not info.value.retryable
    assert client.synthesize("this is fine").num_frames > 0  # the worker lives on


def test_status_ping_and_job_status(broker: BrokerProc, client: TtsClient, tone_workers) -> None:
    tone_workers(broker, n=2)
    pong = client.ping()
    assert pong.broker_id.startswith("b-") and pong.rtt_ms < 1000
    client.synthesize("status check", job_id="status-1")
    view = client.job_status("status-1")
    assert view.state is JobState.DONE and view.worker_id is not None
    status = client.broker_status()
    assert status.broker_id == pong.broker_id and len(status.workers) == 2
    assert sum(w.jobs_done for w in status.workers) >= 0 and status.queue["depth"] == 0
    with pytest.raises(NotFound):
        client.job_status("never-submitted")


def test_reload_tells_matching_workers(broker: BrokerProc, client: TtsClient, tone_workers) -> None:
    tone_workers(broker, n=2)
    assert client.reload(model="no-such-engine") == 0
    assert client.reload(model="tone", options={"latency_s": 0.0}) == 2
    wait_for(lambda: len(client.broker_status().workers) == 2, 30, what="workers back after reload")
    assert client.synthesize("after reload").num_frames == tone_frames("after reload")


def test_invalid_requests_fail_in_the_caller(client: TtsClient) -> None:
    with pytest.raises(InvalidRequest):
        client.submit("")
    with pytest.raises(InvalidRequest):
        client.submit("x", job_id="bad id with spaces")
    with pytest.raises(InvalidRequest):
        client.submit("x", priority="urgent")


@pytest.mark.unit
def test_no_broker_means_broker_unavailable_quickly(make_client: Callable[..., TtsClient],
                                                    dead_endpoint: str) -> None:
    c = make_client(dead_endpoint, request_timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable):
        c.ping()
    with pytest.raises(BrokerUnavailable):
        c.synthesize("nobody listens", timeout_s=1.0)
    assert time.monotonic() - started < 5
    assert not c.is_alive(timeout_s=0.2)


def test_close_is_idempotent_and_fails_pending_calls(broker: BrokerProc, make_client) -> None:
    c = make_client(broker.frontend)
    handle = c.submit("nobody serves this yet")  # no workers: stays queued
    c.close()
    c.close()
    with pytest.raises(ClientClosed):
        handle.result()
    with pytest.raises(ClientClosed):
        c.submit("after close")
    with TtsClient(broker.frontend) as ctx_client:
        assert ctx_client.ping().broker_id
    assert ctx_client.closed


def test_async_client_runs_jobs_concurrently_and_streams(broker: BrokerProc, tone_workers) -> None:
    tone_workers(broker, n=2)

    async def main() -> None:
        async with AsyncTtsClient(broker.frontend, timeout_s=60) as aclient:
            texts = [f"Async line {i}. Second sentence." for i in range(20)]
            results = await asyncio.gather(*(aclient.synthesize(t) for t in texts))
            assert [r.num_frames for r in results] == [tone_frames(t) for t in texts]
            stream = await aclient.stream(TEXT)
            chunks = [c async for c in stream]
            assert b"".join(c.pcm for c in chunks) == (await stream.result()).pcm
            assert (await aclient.ping()).broker_id
            status = await aclient.broker_status()
            assert len(status.workers) == 2
        assert aclient.closed

    asyncio.run(asyncio.wait_for(main(), 60))


def test_cancelling_an_async_task_cancels_the_job(broker: BrokerProc, client: TtsClient, tone_workers) -> None:
    tone_workers(broker, latency_s=30)

    async def main() -> None:
        async with AsyncTtsClient(broker.frontend) as aclient:
            task = asyncio.ensure_future(aclient.synthesize("slow", job_id="async-cancel"))
            await asyncio.sleep(0)  # let the task submit
            while (await aclient.job_status("async-cancel")).state is not JobState.RUNNING:
                await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(asyncio.wait_for(main(), 60))
    wait_for(lambda: client.job_status("async-cancel").state is JobState.CANCELLED, 10, what="job cancelled")
