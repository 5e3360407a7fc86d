"""Faults the client must ride out: broker killed or drained and restarted mid-batch, a full queue, no workers
yet; and output paths that try to escape their folder."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Callable

import pytest

from tts_client import TtsClient, UnsafePath, save_line, write_pcm
from tts_client.audio import line_output_path, safe_output_path

from harness import BrokerProc, tone_frames, wait_for

pytestmark = pytest.mark.timeout(150)


@pytest.mark.parametrize("how", ["kill", "drain"])
def test_broker_restart_mid_batch_every_job_completes(broker_factory: Callable[..., BrokerProc], tone_workers,
                                                      make_client: Callable[..., TtsClient], how: str) -> None:
    broker = broker_factory("--drain-grace-s", "0")
    tone_workers(broker, n=2, latency_s=0.05)
    client = make_client(broker.frontend, ping_interval_s=0.3, resubmit_after_s=3, timeout_s=120,
                         retry_backoff_max_s=1.0)
    texts = [f"Restart line {i}. " + "x" * (i % 7) for i in range(120)]
    handles = [client.submit(t, job_id=f"rs-{i}") for i, t in enumerate(texts)]
    wait_for(lambda: sum(h.done() for h in handles) >= 20, 60, what="20 jobs done before the restart")
    first_broker = client.broker_id
    done_before = sum(h.done() for h in handles)
    assert first_broker is not None and done_before < len(handles)
    if how == "kill":
        broker.kill()
    else:  # SIGTERM with no grace: everything unfinished gets shutting_down (retryable)
        assert broker.stop() == 0
    broker.start()
    results = [h.result() for h in handles]
    assert [r.job_id for r in results] == [f"rs-{i}" for i in range(len(texts))]
    assert [r.num_frames for r in results] == [tone_frames(t) for t in texts]
    assert client.broker_id != first_broker
    # the new broker ran the jobs the old one lost
    assert client.broker_status().jobs["done"] >= 1


def test_jobs_queued_through_a_drain_with_no_worker_complete_after_the_restart(
        broker: BrokerProc, tone_workers, make_client: Callable[..., TtsClient]) -> None:
    # `docker compose down`: no worker left, SIGTERM; the broker stops at once, its journal keeps the jobs
    # unanswered, and the client's jobs finish once the broker is back (new broker_id: resubmitted, attached).
    client = make_client(broker.frontend, ping_interval_s=0.3, resubmit_after_s=3, timeout_s=60)
    texts = [f"Queued through a drain {i}." for i in range(3)]
    handles = [client.submit(t, job_id=f"qd-{i}") for i, t in enumerate(texts)]
    wait_for(lambda: all(client.job_status(f"qd-{i}").state.value == "queued" for i in range(3)), 10,
             what="jobs queued")
    first_broker = client.broker_id
    assert broker.stop() == 0 and "the journal keeps them" in broker.log()
    assert not any(h.done() for h in handles)  # no shutting_down reached the caller
    broker.start()
    tone_workers(broker)
    assert [h.result().num_frames for h in handles] == [tone_frames(t) for t in texts]
    assert client.broker_id != first_broker


def test_full_queue_is_retried_until_the_jobs_fit(broker_factory: Callable[..., BrokerProc], tone_workers,
                                                  make_client: Callable[..., TtsClient]) -> None:
    broker = broker_factory("--max-queue", "5")
    tone_workers(broker, latency_s=0.02)
    client = make_client(broker.frontend, retry_backoff_initial_s=0.05, retry_backoff_max_s=0.5)
    handles = [client.submit(f"queue line {i}") for i in range(40)]
    assert all(h.result().num_frames == tone_frames(f"queue line {i}") for i, h in enumerate(handles))


def test_job_waits_for_the_first_worker(broker: BrokerProc, tone_workers, make_client) -> None:
    client = make_client(broker.frontend)
    handle = client.submit("before any worker", job_id="early")
    wait_for(lambda: client.job_status("early").state.value == "queued", 10, what="job queued")
    tone_workers(broker)
    assert handle.result().job_id == "early"


def test_worker_killed_mid_job_is_invisible_to_the_caller(broker: BrokerProc, tone_workers, make_client) -> None:
    client = make_client(broker.frontend)
    tone_workers(broker, n=1, latency_s=2)
    handle = client.submit("survives a worker crash", job_id="wk")
    wait_for(lambda: client.job_status("wk").state.value == "running", 20, what="job running")
    victim = client.broker_status().workers[0].pid
    os.kill(victim, signal.SIGKILL)  # the supervisor starts a replacement; the broker requeues the job
    result = handle.result()
    assert result.meta.attempt >= 2 and result.num_frames == tone_frames("survives a worker crash")


# ---- output paths ----------------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize("name", ["../escape.wav", "/etc/passwd", "sub/dir.wav", "..", ".", ""])
def test_paths_outside_the_output_dir_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(UnsafePath):
        safe_output_path(tmp_path, name)


@pytest.mark.unit
@pytest.mark.parametrize("stream_index, line_id", [(1, "../../etc/passwd"), ("..", ".."), ("/abs", "/root/x"),
                                                   (0, "a/b\\c"), (0, "\x00nul"), (0, "x" * 500)])
def test_hostile_ids_become_safe_names_inside_the_folder(tmp_path: Path, stream_index: object,
                                                         line_id: str) -> None:
    path = line_output_path(tmp_path, stream_index, line_id, "wav")
    assert path.parent == tmp_path.resolve() and not path.name.startswith(".") and len(path.name) <= 64 * 2 + 5
    write_pcm(path, b"\x00\x01" * 100, 16000)
    assert path.exists()


@pytest.mark.unit
def test_a_planted_symlink_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    outside = tmp_path / "victim.txt"
    outside.write_text("keep me")
    (out / "0_x.wav").symlink_to(outside)
    with pytest.raises(UnsafePath):
        line_output_path(out, 0, "x", "wav")
    assert outside.read_text() == "keep me"


@pytest.mark.unit
def test_failed_write_leaves_no_file_behind(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):  # soundfile.LibsndfileError
        write_pcm(tmp_path / "bad.wav", b"\x00\x01" * 10, 0)  # sample rate 0: libsndfile refuses
    assert list(tmp_path.iterdir()) == []


@pytest.mark.unit
def test_save_line_overwrites_atomically(tmp_path: Path) -> None:
    from tts_protocol.messages import Result

    from tts_client.results import SynthesisResult

    def result(n: int) -> SynthesisResult:
        meta = Result(job_id="j", attempt=1, worker_id="w", engine="tone", model="m", sample_rate=16000)
        return SynthesisResult("j", b"\x01\x00" * n, 16000, 1, meta)

    first = save_line(result(100), tmp_path, 0, "same", "wav")
    inode = first.stat().st_ino
    second = save_line(result(300), tmp_path, 0, "same", "wav")
    assert first == second and second.stat().st_ino != inode  # replaced by rename, not rewritten in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0_same.wav"]
