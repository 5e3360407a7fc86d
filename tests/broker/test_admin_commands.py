"""Admin commands over real sockets: DRAIN_WORKER, PAUSE_MODEL, RESUME_MODEL (PROTOCOL.md section 3)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any, Callable

import pytest

from tts_protocol import Command

from tests.conftest import BrokerProc, Proc, wait_for
from tests.peers import RawClient, RawWorker

pytestmark = pytest.mark.timeout(60)


def _names(status: Any) -> set[str]:
    return {w.name for w in status.workers}


def test_pause_holds_queued_jobs_and_resume_releases_them(broker: BrokerProc, ctx: Any) -> None:
    client = RawClient(ctx, broker.frontend)
    worker = RawWorker(ctx, broker.backend, name="w-pause")
    wait_for(lambda: "w-pause" in _names(client.status()), 10, what="worker registered")

    reply = client.request(Command.PAUSE_MODEL, Command.ADMIN_REPLY, model="tone")
    assert reply.body.paused == ["tone"]
    client.submit("paused-1", model="tone")
    client.submit("free-1", model="tone:tone-v1")  # another key the same worker serves: not paused
    job = worker.next_job()
    assert job.job_id == "free-1"
    worker.result(job)
    client.recv_until(Command.RESULT)
    status = client.status()
    assert status.paused == ["tone"]
    assert status.queue["depth"] == 1
    worker.assert_quiet(client)  # the paused job is not leased

    reply = client.request(Command.RESUME_MODEL, Command.ADMIN_REPLY, model="tone")
    assert reply.body.paused == []
    job = worker.next_job()
    assert job.job_id == "paused-1"
    worker.result(job)
    result = client.recv_until(Command.RESULT)
    assert result.body.job_id == "paused-1"
    assert client.status().paused == []


def test_drain_worker_finishes_its_job_then_disconnects(broker: BrokerProc, ctx: Any) -> None:
    client = RawClient(ctx, broker.frontend)
    busy = RawWorker(ctx, broker.backend, name="w-busy")
    wait_for(lambda: "w-busy" in _names(client.status()), 10, what="first worker registered")
    client.submit("held-1")
    job = busy.next_job()
    other = RawWorker(ctx, broker.backend, name="w-other")
    wait_for(lambda: "w-other" in _names(client.status()), 10, what="second worker registered")

    reply = client.request(Command.DRAIN_WORKER, Command.ADMIN_REPLY, worker="w-busy")
    assert reply.body.workers == [busy.worker_id]
    states = {w.name: w.state for w in client.status().workers}
    assert states["w-busy"] == "draining"
    client.submit("new-1")
    assert other.next_job().job_id == "new-1"  # the draining worker gets no new job

    busy.result(job)  # the job in hand still counts
    assert client.recv_until(Command.RESULT).body.job_id in ("held-1", "new-1")
    bye = busy.recv_until(Command.B_DISCONNECT)
    assert bye.body.reason == "drained"
    wait_for(lambda: "w-busy" not in _names(client.status()), 10, what="drained worker forgotten")


def test_drain_host_and_bad_requests(broker: BrokerProc, ctx: Any) -> None:
    client = RawClient(ctx, broker.frontend)
    workers = [RawWorker(ctx, broker.backend, name=f"h-{i}") for i in range(2)]
    wait_for(lambda: {"h-0", "h-1"} <= _names(client.status()), 10, what="workers registered")

    error = client.request(Command.DRAIN_WORKER, Command.ERROR, worker="nobody")
    assert error.body.code == "not_found"
    error = client.request(Command.DRAIN_WORKER, Command.ERROR)
    assert error.body.code == "bad_request"
    error = client.request(Command.DRAIN_WORKER, Command.ERROR, worker="h-0", host="test")
    assert error.body.code == "bad_request"

    reply = client.request(Command.DRAIN_WORKER, Command.ADMIN_REPLY, host="test")  # RawWorker's host
    assert sorted(reply.body.workers) == sorted(w.worker_id for w in workers)
    for worker in workers:  # idle: told to leave at once
        assert worker.recv_until(Command.B_DISCONNECT).body.reason == "drained"
    wait_for(lambda: not client.status().workers, 10, what="drained workers forgotten")


def test_cli_drain_pause_resume_and_a_real_worker_leaves(broker: BrokerProc,
                                                         start_worker: Callable[..., Proc]) -> None:
    worker = start_worker(broker, concurrency=1)

    def tts(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "tts_client", "--broker", broker.frontend, *args],
                              capture_output=True, text=True, timeout=30)

    def registered() -> bool:
        return "test-1/0" in tts("status").stdout

    wait_for(registered, 30, interval_s=0.2, what="worker registered")
    paused = tts("pause", "piper:x")
    assert paused.returncode == 0, paused.stderr
    assert "piper:x" in paused.stdout
    assert "paused models: piper:x" in tts("status").stdout
    resumed = tts("resume", "piper:x")
    assert resumed.returncode == 0 and "paused: none" in resumed.stdout

    missing = tts("drain", "nobody")
    assert missing.returncode == 1 and "not_found" in missing.stderr + missing.stdout
    drained = tts("drain", "test-1/0")
    assert drained.returncode == 0, drained.stderr
    # The drained process exits DRAINED, its supervisor does not restart it and, with no process left, exits 0.
    assert worker.popen.wait(30) == 0, worker.log()
    assert "drained by the broker" in worker.log()
