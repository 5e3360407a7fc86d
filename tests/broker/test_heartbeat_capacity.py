"""HEARTBEAT `capacity` over real sockets: a worker's capacity follows its heartbeats (0 = no new job)."""

from __future__ import annotations

import pytest
import zmq

from tts_protocol import Command

from harness import BrokerProc, wait_for
from peers import RawClient, RawWorker

pytestmark = pytest.mark.timeout(60)


def capacity_of(client: RawClient, worker: RawWorker) -> int:
    """The worker's capacity in the status view; -1 until its READY is handled (ZeroMQ connects lazily)."""
    return next((w.capacity for w in client.status().workers if w.worker_id == worker.worker_id), -1)


def test_heartbeat_capacity_steers_how_many_jobs_a_worker_gets(broker: BrokerProc, ctx: zmq.Context) -> None:
    client = RawClient(ctx, broker.frontend)
    worker = RawWorker(ctx, broker.backend, capacity=1)
    worker.send(Command.W_HEARTBEAT, {"stats": {}, "capacity": 0})
    wait_for(lambda: capacity_of(client, worker) == 0, 10, what="capacity 0 in the status view")
    for i in range(4):
        client.submit(f"j{i}", f"line {i}")
    worker.assert_quiet(client)  # capacity 0: no JOB, though four are queued
    worker.send(Command.W_HEARTBEAT, {"stats": {}, "capacity": 3})  # above READY's 1: it replaces it
    jobs = [worker.next_job() for _ in range(3)]
    assert sorted(job.job_id for job in jobs) == ["j0", "j1", "j2"]
    worker.send(Command.W_HEARTBEAT, {"stats": {"busy": 3}})  # no capacity key: unchanged
    worker.send(Command.W_HEARTBEAT, {"stats": {}, "capacity": 1})  # lowered below the 3 in hand: none revoked
    worker.result(jobs[0])
    worker.result(jobs[1])
    worker.assert_quiet(client)  # 1 still in hand = capacity 1: the fourth job waits
    worker.result(jobs[2])
    assert worker.next_job().job_id == "j3"
    assert capacity_of(client, worker) == 1


def test_heartbeat_capacity_is_clamped_to_max_worker_capacity(broker_factory, ctx: zmq.Context) -> None:
    broker: BrokerProc = broker_factory("--max-worker-capacity", "2")
    client = RawClient(ctx, broker.frontend)
    worker = RawWorker(ctx, broker.backend, capacity=1)
    worker.send(Command.W_HEARTBEAT, {"stats": {}, "capacity": 50})
    wait_for(lambda: capacity_of(client, worker) == 2, 10, what="capacity clamped to 2")
