"""The broker against hand-driven protocol peers on real sockets: leases, liveness, routing, limits."""

from __future__ import annotations

import signal
import time

import pytest
import zmq

from tts_protocol import Command, Side
from tts_protocol.constants import JobState

from harness import BrokerProc, wait_for
from peers import Peer, RawClient, RawWorker

pytestmark = pytest.mark.timeout(60)


def workers_registered(client: RawClient, n: int) -> bool:
    return len(client.status().workers) >= n


def test_dead_worker_job_is_requeued_and_its_late_result_dropped(broker_factory, ctx: zmq.Context) -> None:
    broker = broker_factory("--heartbeat-interval-s", "0.2", "--heartbeat-liveness", "3")
    client = RawClient(ctx, broker.frontend)
    doomed = RawWorker(ctx, broker.backend, name="doomed")
    client.submit("j-requeue")
    job = doomed.next_job()
    survivor = RawWorker(ctx, broker.backend, name="survivor")
    # doomed goes silent; survivor keeps heartbeating until it is handed the job.
    deadline = time.monotonic() + 10
    retry = None
    while retry is None and time.monotonic() < deadline:
        survivor.heartbeat()
        if survivor.sock.poll(100):
            msg = survivor.recv()
            if msg.command is Command.B_JOB:
                retry = msg.body
    assert retry is not None and (retry.job_id, retry.attempt) == ("j-requeue", 2)
    doomed.result(job, b"\x00\x00")  # too late: the broker declared it dead
    assert doomed.recv_until(Command.B_DISCONNECT).body.reason
    survivor.result(retry, b"\x07\x00")
    result = client.recv_until(Command.RESULT)
    assert result.payload == b"\x07\x00" and result.body.attempt == 2 and result.body.worker_id == survivor.worker_id


def test_deadline_fails_the_job_and_cancels_the_worker(broker: BrokerProc, ctx: zmq.Context) -> None:
    client = RawClient(ctx, broker.frontend)
    worker = RawWorker(ctx, broker.backend)
    client.submit("slow", deadline_ms=300)
    job = worker.next_job()
    assert 0 < job.timeout_ms <= 300
    error = client.recv_until(Command.ERROR, skip=(Command.ACCEPTED,))
    assert error.body.code == "deadline_exceeded"
    assert worker.recv_until(Command.B_CANCEL).body.job_id == "slow"
    worker.result(job, b"\x00\x00")  # late: dropped
    observer = RawClient(ctx, broker.frontend)  # its status requests would skip a RESULT sent to `client`
    wait_for(lambda: observer.status().workers[0].busy == 0, 10, what="the late answer frees the revoked slot")
    client.assert_quiet()


def test_queued_job_past_its_deadline_never_runs(broker: BrokerProc, ctx: zmq.Context) -> None:
    client = RawClient(ctx, broker.frontend)
    client.submit("expires", deadline_ms=200)
    assert client.recv_until(Command.ERROR, skip=(Command.ACCEPTED,)).body.code == "deadline_exceeded"
    worker = RawWorker(ctx, broker.backend)
    wait_for(lambda: workers_registered(client, 1))
    worker.assert_quiet(via=client)


def test_attempt_timeout_requeues_then_fails(broker_factory, ctx: zmq.Context) -> None:
    broker = broker_factory("--max-attempts", "2")
    client = RawClient(ctx, broker.frontend)
    worker = RawWorker(ctx, broker.backend, capacity=2)
    client.submit("hangs", timeout_ms=300)
    first = worker.next_job()
    assert worker.recv_until(Command.B_CANCEL).body.attempt == 1
    second = worker.next_job()  # second slot: the first is still held by the unanswered lease
    assert (second.job_id, second.attempt) == ("hangs", 2)
    error = client.recv_until(Command.ERROR, skip=(Command.ACCEPTED,))
    assert error.body.code == "max_attempts"
    assert first.attempt == 1


def test_unroutable_jobs_fail_after_the_timeout(broker_factory, ctx: zmq.Context) -> None:
    broker = broker_factory("--unroutable-timeout-s", "0.3")
    client = RawClient(ctx, broker.frontend)
    RawWorker(ctx, broker.backend, engine="tone")
    client.submit("nobody-serves", model="fish-speech")
    error = client.recv_until(Command.ERROR, skip=(Command.ACCEPTED,))
    assert (error.body.code, error.body.retryable) == ("no_workers", True)


def test_sticky_routing_prefers_a_warm_worker_without_starving(broker: BrokerProc, ctx: zmq.Context) -> None:
    client = RawClient(ctx, broker.frontend)
    worker = RawWorker(ctx, broker.backend)
    worker.heartbeat(warm=["alice"], engine={"token_cache": {"hits": 0}})
    wait_for(lambda: workers_registered(client, 1))
    wait_for(lambda: client.status().workers[0].warm == ["alice"])
    assert client.status().workers[0].engine_stats == {"token_cache": {"hits": 0}}
    client.submit("busy")
    job = worker.next_job()
    client.submit("bob-1", speaker="bob")
    client.submit("alice-1", speaker="alice")
    for _ in range(2):
        client.recv_until(Command.ACCEPTED, skip=(Command.ACCEPTED,))
    worker.result(job)
    first = worker.next_job()
    assert first.job_id == "alice-1"  # warm speaker first, though bob-1 is older
    worker.result(first)
    assert worker.next_job().job_id == "bob-1"


def test_unknown_worker_is_told_to_reregister(broker: BrokerProc, ctx: zmq.Context) -> None:
    worker = RawWorker(ctx, broker.backend)
    # A worker whose broker forgot it (restart, declared dead) looks like a socket that never sent READY.
    ghost = Peer(ctx, broker.backend, Side.WORKER)
    ghost.send(Command.W_HEARTBEAT, {"stats": {}})
    assert ghost.recv_until(Command.B_DISCONNECT).body.reason
    worker.heartbeat(engine={"probe": 1})
    client = RawClient(ctx, broker.frontend)
    wait_for(lambda: client.status().workers[0].engine_stats == {"probe": 1}, 10, what="the heartbeat handled")
    worker.assert_quiet(via=client)


GARBAGE = [
    [b"hello"],
    [b"TTSC2"],
    [b"TTSC2\x01", b"\xc1"],
    [b"TTSC2\x01", b"\x93\x01\x02\x03"],
    [b"TTSC2\xff", b"\x80"],
    [b"TTSW2\x21", b"\x80"],
    [b"TTSC2\x01", b"\x82\xa6job_id\xa3a/b\xa4text\xa1x"],
    [b"TTSC2\x01", b"\x81\xa6job_id\xa1j"],
    [b"TTSC2\x05", b"\x81\xa6req_id\xa1r", b"x", b"y"],
    [b"", b"TTSC1", b"\x05", b"\x81\xa6req_id\xa1r"],  # a TTSP/1 peer
    [b"x" * 1000] * 9,
]


def test_garbage_on_both_ports_is_answered_or_dropped_and_the_broker_keeps_serving(
    broker: BrokerProc, ctx: zmq.Context
) -> None:
    client = RawClient(ctx, broker.frontend)
    for frames in GARBAGE:
        client.send_raw(frames)
    errors = 0
    while client.sock.poll(500):
        msg = client.recv()
        assert msg.command is Command.ERROR and msg.body.code == "protocol"
        errors += 1
    assert errors == len(GARBAGE)
    garbage_worker = RawWorker(ctx, broker.backend)
    for frames in GARBAGE + [[b"TTSW2\x24", b"\x80"], [b"TTSW2\x24", b"\x80", b"pcm"]]:
        garbage_worker.send_raw(frames)
    garbage_worker.send(Command.W_DISCONNECT, {"reason": "done sending garbage"})
    # Truncated, oversized and random-byte frames on raw TCP, not even ZMTP.
    import socket
    for endpoint in (broker.frontend, broker.backend):
        host, port = endpoint.replace("tcp://", "").split(":")
        with socket.create_connection((host, int(port))) as raw:
            raw.sendall(b"\xff\x00\x00\x00\x00\x00\x00\x00\x01\x7f" + b"\x00" * 54 + b"\x04\xff" * 100)
    # Still serving, on both ports.
    worker = RawWorker(ctx, broker.backend)
    client.submit("after-garbage")
    job = worker.next_job()
    worker.result(job)
    assert client.recv_until(Command.RESULT, skip=(Command.ACCEPTED,)).body.job_id == "after-garbage"
    assert broker.proc is not None and broker.proc.alive()


def test_oversized_message_drops_only_that_peer(broker_factory, ctx: zmq.Context) -> None:
    broker = broker_factory()
    client = RawClient(ctx, broker.frontend)
    big = RawClient(ctx, broker.frontend)
    big.send_raw([b"TTSC2\x01", b"\x80", b"x" * (65 * 1024 * 1024)])  # over the 64 MiB limit
    client.submit("small")
    assert client.recv_until(Command.ACCEPTED).body.job_id == "small"
    assert broker.proc is not None and broker.proc.alive()


def test_text_longer_than_the_limit_is_a_bad_request(broker: BrokerProc, ctx: zmq.Context) -> None:
    client = RawClient(ctx, broker.frontend)
    client.submit("long", "x" * 20_001)
    error = client.recv_until(Command.ERROR)
    assert error.body.code == "bad_request" and "20000" in error.body.message


def test_job_status_and_ping(broker: BrokerProc, ctx: zmq.Context) -> None:
    client = RawClient(ctx, broker.frontend)
    client.submit("watched")
    view = client.request(Command.JOB_STATUS, Command.JOB_STATUS_REPLY, job_id="watched").body.job
    assert view.state is JobState.QUEUED and view.attempt == 0
    pong = client.request(Command.PING, Command.PONG).body
    assert pong.broker_id.startswith("b-")
    missing = client.request(Command.JOB_STATUS, Command.ERROR, job_id="nope").body
    assert missing.code == "not_found" and missing.req_id


def test_sigterm_drains_running_jobs_then_exits(broker_factory, ctx: zmq.Context) -> None:
    broker = broker_factory("--drain-grace-s", "10")
    client = RawClient(ctx, broker.frontend)
    worker = RawWorker(ctx, broker.backend)
    client.submit("finishing")
    job = worker.next_job()
    assert broker.proc is not None
    broker.proc.signal(signal.SIGTERM)
    wait_for(lambda: "draining" in broker.log(), 10)
    client.submit("too-late")
    error = client.recv_until(Command.ERROR, skip=(Command.ACCEPTED,))
    assert (error.body.job_id, error.body.code, error.body.retryable) == ("too-late", "shutting_down", True)
    worker.result(job)
    assert client.recv_until(Command.RESULT).body.job_id == "finishing"
    assert broker.proc.popen.wait(10) == 0
    assert worker.recv_until(Command.B_DISCONNECT).body.reason == "broker shutting down"


def test_drain_grace_expiry_fails_leftovers_as_retryable(broker_factory, ctx: zmq.Context) -> None:
    broker = broker_factory("--drain-grace-s", "0.3")
    client = RawClient(ctx, broker.frontend)
    worker = RawWorker(ctx, broker.backend)
    client.submit("stuck")
    worker.next_job()
    assert broker.proc is not None
    broker.proc.signal(signal.SIGTERM)
    error = client.recv_until(Command.ERROR, skip=(Command.ACCEPTED,))
    assert (error.body.code, error.body.retryable) == ("shutting_down", True)
    assert broker.proc.popen.wait(10) == 0


def test_sigterm_with_queued_jobs_and_no_worker_stops_at_once_and_keeps_them(broker: BrokerProc,
                                                                             ctx: zmq.Context) -> None:
    # `docker compose down`: the workers stop first, then the broker gets SIGTERM with jobs still queued.
    client = RawClient(ctx, broker.frontend)
    worker = RawWorker(ctx, broker.backend)
    wait_for(lambda: workers_registered(client, 1))
    worker.send(Command.W_DISCONNECT, {"reason": "stopping"})
    wait_for(lambda: not workers_registered(client, 1))
    client.submit("kept")
    assert client.recv_until(Command.ACCEPTED).body.job_id == "kept"
    assert broker.proc is not None
    signalled = time.monotonic()
    broker.proc.signal(signal.SIGTERM)
    assert broker.proc.popen.wait(10) == 0
    assert time.monotonic() - signalled < 5  # not the 30 s grace
    assert "the journal keeps them" in broker.log()
    broker.start()
    client.submit("kept")  # what a client does when the broker_id changed: resubmit, and attach
    # An ERROR shutting_down from the old broker would come first, and fail this:
    accepted = client.recv_until(Command.ACCEPTED).body
    assert (accepted.job_id, accepted.duplicate, accepted.state) == ("kept", True, JobState.QUEUED)
    worker2 = RawWorker(ctx, broker.backend)
    worker2.result(worker2.next_job())
    assert client.recv_until(Command.RESULT).body.job_id == "kept"


def test_reload_is_forwarded_to_matching_workers(broker: BrokerProc, ctx: zmq.Context) -> None:
    client = RawClient(ctx, broker.frontend)
    fish = RawWorker(ctx, broker.backend, engine="fish-speech", model="1.5")
    tone = RawWorker(ctx, broker.backend, engine="tone")
    wait_for(lambda: workers_registered(client, 2))
    reply = client.request(Command.RELOAD, Command.RELOAD_REPLY, model="fish-speech",
                           options={"checkpoint": "/models/s1"})
    assert reply.body.workers == 1
    assert fish.recv_until(Command.B_RELOAD).body.options == {"checkpoint": "/models/s1"}
    tone.assert_quiet(via=client)
