"""Issue 9 against real processes: nothing a peer sends kills the broker or the worker, fairness, conflicts.

Fuzz (hypothesis, each port on a time budget): random frames and plausible bodies with out-of-range values
on the client port, the worker port, and into a real worker from a scripted broker; then a normal job
succeeds, the broker still answers BROKER_STATUS, and no handler raised (no traceback in the log).
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any, Callable

import msgpack
import pytest
import zmq
from fuzzing import Budget, frames_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tts_protocol import Command, Side, body_for, decode, encode
from tts_protocol.constants import CLIENT_HEADER, WORKER_HEADER
from tts_protocol.messages import JobAssignment

from harness import BrokerProc, Proc, TrackedContext, wait_for
from peers import RawClient, RawWorker

pytestmark = pytest.mark.timeout(180)

FUZZ_S = 25.0  # ceiling per fuzzed receiver; 2,000 cases usually take 10-15 s to generate and send
CLIENT_VALID = {"job_id": "fz-1", "text": "fuzz", "req_id": "r1", "model": "fuzz", "limit": 5, "state": "failed",
                "priority": "low", "options": {}}
WORKER_VALID = {"worker_id": "fz-w", "engine": "fuzz", "model": "", "capacity": 1, "job_id": "fz-1", "attempt": 1,
                "sample_rate": 16000, "seq": 0, "code": "engine_error", "stats": {}, "reason": "fuzz"}
HYPOTHESIS = settings(max_examples=2000, deadline=None, database=None, suppress_health_check=list(HealthCheck))


def fuzz_socket(ctx: TrackedContext, endpoint: str) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    ctx.adopt(sock)  # the `ctx` fixture closes it at teardown
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.connect(endpoint)
    return sock


def drain(sock: zmq.Socket) -> int:
    count = 0
    while True:
        try:
            sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return count
        count += 1


def tone_worker(broker: BrokerProc, start_worker: Callable[..., Proc], client: RawClient, **opts: Any) -> Proc:
    worker = start_worker(broker, "tone", opts=opts or None)
    wait_for(lambda: any(w.engine == "tone" for w in client.status().workers), 30, what="tone worker READY")
    return worker


def normal_job(client: RawClient, job_id: str) -> None:
    client.submit(job_id, "a normal job after the storm", model="tone")
    # Answers to other jobs (the fuzz's) may arrive first; an ERROR for this one fails at once, naming it.
    deadline = time.monotonic() + 60
    while True:
        msg = client.recv(max(0.0, deadline - time.monotonic()))
        if getattr(msg.body, "job_id", None) != job_id:
            continue
        assert msg.command is not Command.ERROR, f"{job_id}: {msg.body}"
        if msg.command is Command.RESULT:
            break
    assert msg.body.num_samples > 0


def assert_no_tracebacks(log: str) -> None:
    assert "Traceback" not in log and "internal error" not in log, log[-3000:]


def test_fuzz_the_client_port_then_a_normal_job_succeeds(broker_factory, start_worker, ctx: TrackedContext) -> None:
    broker = broker_factory("--max-text-chars", "500", "--job-timeout-s", "5")
    sock = fuzz_socket(ctx, broker.frontend)
    budget = Budget(FUZZ_S)
    replies = [0]

    @HYPOTHESIS
    @given(frames=frames_for(Side.CLIENT, CLIENT_VALID))
    def case(frames: list[bytes]) -> None:
        if budget.spend():
            sock.send_multipart(frames)
            if budget.cases % 64 == 0:
                replies[0] += drain(sock)

    case()
    client = RawClient(ctx, broker.frontend)
    client.ping()
    replies[0] += drain(sock)
    print(f"client port: {budget.cases} fuzz cases, {replies[0]} replies")
    assert budget.cases >= 1000 and replies[0] > budget.cases // 2  # malformed messages are answered
    assert broker.proc is not None and broker.proc.alive()
    # Without CURVE every client may use the admin commands, and the fuzz sends well-formed ones too: a
    # PAUSE_MODEL of "tone" (one of its sampled strings) is obeyed, as it should be, and the normal job would
    # wait behind it. Resume what the fuzz paused, as an operator would.
    for key in client.status().paused:
        client.request(Command.RESUME_MODEL, Command.ADMIN_REPLY, model=key)
    assert client.status().paused == []
    tone_worker(broker, start_worker, client)
    normal_job(client, "after-client-fuzz")
    assert_no_tracebacks(broker.log())


def test_fuzz_the_worker_port_then_status_and_a_normal_job_work(broker_factory, start_worker,
                                                                ctx: TrackedContext) -> None:
    broker = broker_factory("--job-timeout-s", "5")
    client = RawClient(ctx, broker.frontend)
    client.submit("fz-1", "a job a fuzzing worker may be leased", model="fuzz")
    sock = fuzz_socket(ctx, broker.backend)
    budget = Budget(FUZZ_S)

    @HYPOTHESIS
    @given(frames=frames_for(Side.WORKER, WORKER_VALID))
    def case(frames: list[bytes]) -> None:
        if budget.spend():
            sock.send_multipart(frames)
            if budget.cases % 64 == 0:
                drain(sock)

    case()
    print(f"worker port: {budget.cases} fuzz cases")
    assert budget.cases >= 1000
    client.ping()
    status = client.status()  # whatever stats the fuzzing worker left, BROKER_STATUS still packs
    assert status.broker_id
    sock.send_multipart(encode(Command.W_DISCONNECT, body_for(Command.W_DISCONNECT, {"reason": "done"})))
    wait_for(lambda: not client.status().workers, 10, what="the fuzzing worker to leave")
    assert broker.proc is not None and broker.proc.alive()
    tone_worker(broker, start_worker, client)
    normal_job(client, "after-worker-fuzz")
    assert_no_tracebacks(broker.log())


def test_fuzz_a_real_worker_s_job_parsing_then_it_runs_a_normal_job(tmp_path, start_worker, procs,
                                                                     ctx: TrackedContext) -> None:
    router = ctx.socket(zmq.ROUTER)
    ctx.adopt(router)  # the `ctx` fixture closes it at teardown
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    broker = BrokerProc(tmp_path, procs, [])
    broker.backend = f"tcp://127.0.0.1:{port}"
    worker = start_worker(broker, "tone")
    assert router.poll(30_000), "no READY from the worker"
    identity = router.recv_multipart()[0]
    heartbeat = encode(Command.B_HEARTBEAT, body_for(Command.B_HEARTBEAT, {}))
    budget = Budget(FUZZ_S)
    valid = {"job_id": "fz-1", "attempt": 1, "text": "fuzz", "model": "tone", "timeout_ms": 1000, "options": {},
             "reason": "fuzz"}
    # Not B_DISCONNECT / B_RELOAD: those make the worker leave and come back under a new routing id.
    commands = [Command.B_JOB, Command.B_CANCEL, Command.B_HEARTBEAT]

    beat = [0.0]

    @HYPOTHESIS
    @given(frames=st.one_of(frames_for(Side.WORKER, valid, [Command.B_JOB]), frames_for(Side.WORKER, valid, commands)))
    def case(frames: list[bytes]) -> None:
        if time.monotonic() - beat[0] > 0.3:  # even once the budget is spent: the worker must not miss us
            beat[0] = time.monotonic()
            router.send_multipart([identity, *heartbeat])
            while router.poll(0):
                router.recv_multipart()
        if budget.spend():
            router.send_multipart([identity, *frames])

    case()
    print(f"worker job parsing (real worker): {budget.cases} fuzz cases")
    assert budget.cases >= 1000 and worker.alive()
    sent_job = False
    deadline = time.monotonic() + 120
    while True:
        assert time.monotonic() < deadline, "no W_RESULT for the normal job"
        router.send_multipart([identity, *heartbeat])
        if not router.poll(500):
            continue
        frames = router.recv_multipart()
        message = decode(frames[1:], side=Side.WORKER, to_broker=True)
        if frames[0] != identity:
            assert message.command is Command.W_READY, f"{message.command.name} from an unknown worker"
            identity, sent_job = frames[0], False  # it reconnected (a slow machine); go on with the new socket
            continue
        if not sent_job and message.command is Command.W_HEARTBEAT and message.body.stats.get("busy") == 0:
            # The fuzz's valid JOBs are all answered: now a normal one.
            job = JobAssignment(job_id="after-fuzz", attempt=7, text="a normal job", model="tone", timeout_ms=30_000)
            router.send_multipart([identity, *encode(Command.B_JOB, job)])
            sent_job = True
        if message.command is Command.W_RESULT and message.body.job_id == "after-fuzz":
            assert message.body.attempt == 7 and len(message.payload) > 0
            break
    assert worker.alive()
    assert "Traceback" not in worker.log()


# ---- fairness, conflicts, leases, limits --------------------------------------------------------------


def test_a_flooding_client_beside_a_normal_one(broker_factory, start_worker, ctx: TrackedContext) -> None:
    broker = broker_factory("--max-queue", "20000", "--max-client-queued", "10000")
    flooder, normal = RawClient(ctx, broker.frontend), RawClient(ctx, broker.frontend)
    tone_worker(broker, start_worker, normal, latency_s=0.05)
    for i in range(10_000):
        flooder.submit(f"flood-{i}", f"flood {i}", model="tone")
    wait_for(lambda: normal.status().queue["depth"] >= 9_000, 60, what="the flood to be queued")
    started = time.monotonic()
    for i in range(5):
        normal.submit(f"normal-{i}", f"normal {i}", model="tone")
    done = set()
    while len(done) < 5:
        done.add(normal.recv_until(Command.RESULT, timeout_s=60).body.job_id)
    elapsed = time.monotonic() - started
    depth = normal.status().queue["depth"]
    print(f"flood: the normal client's 5 jobs finished in {elapsed:.2f} s with {depth} flood jobs still queued")
    assert depth >= 8_900  # served by turns, not after the flood (10,000 x 50 ms would take over 8 minutes)
    for i in range(10_000 - depth + 50):  # refill past the cap of 10,000 queued jobs per client
        flooder.submit(f"extra-{i}", f"extra {i}", model="tone")
    error = flooder.recv_until(Command.ERROR, timeout_s=30, skip=(Command.RESULT,))
    assert (error.body.code, error.body.retryable) == ("too_many_jobs", True)
    assert error.body.job_id.startswith("extra-") and "max_client_queued" in error.body.message


def test_the_same_id_with_two_texts_is_a_conflict(broker, ctx: TrackedContext) -> None:
    client, other = RawClient(ctx, broker.frontend), RawClient(ctx, broker.frontend)
    client.submit("same-id", "the first text")
    assert client.recv_until(Command.ACCEPTED).body.duplicate is False
    other.submit("same-id", "a second, different text")
    error = other.recv_until(Command.ERROR)
    assert (error.body.job_id, error.body.code, error.body.retryable) == ("same-id", "conflict", False)
    other.submit("same-id", "the first text")
    assert other.recv_until(Command.ACCEPTED).body.duplicate is True


def test_retry_after_cancel_with_a_slow_to_stop_worker(broker, ctx: TrackedContext) -> None:
    client = RawClient(ctx, broker.frontend)
    worker = RawWorker(ctx, broker.backend, capacity=2)
    client.submit("slow", "hello")
    first = worker.next_job()
    assert first.attempt == 1
    client.send(Command.CANCEL, {"job_id": "slow"})
    assert client.recv_until(Command.ERROR).body.code == "cancelled"
    worker.recv_until(Command.B_CANCEL)  # ... and the worker takes its time to stop
    view = client.request(Command.RETRY, Command.JOB_STATUS_REPLY, job_id="slow").body.job
    assert view.state.value == "queued"
    second = worker.next_job()
    assert (second.job_id, second.attempt) == ("slow", 2)  # a new lease, never attempt 1 again
    client.submit("slow", "hello")  # attach to hear the outcome
    worker.fail(first, code="cancelled", message="stopped at last")  # the old attempt's late answer
    wait_for(lambda: client.status().workers[0].busy == 1, 10, what="the late answer to free its slot")
    client.assert_quiet(ignore=(Command.ACCEPTED,))  # no ERROR cancelled for the retried job
    worker.result(second)
    result = client.recv_until(Command.RESULT)
    assert (result.body.job_id, result.body.attempt) == ("slow", 2)


def test_a_timeout_of_2_64_minus_1_is_refused_and_cannot_kill_the_broker(broker_factory, start_worker,
                                                                         ctx: TrackedContext) -> None:
    broker = broker_factory()
    client = RawClient(ctx, broker.frontend)
    huge = {"job_id": "huge", "text": "hello", "timeout_ms": 2**64 - 1}
    client.send_raw([CLIENT_HEADER + bytes((Command.SUBMIT,)), msgpack.packb(huge, use_bin_type=True)])
    error = client.recv_until(Command.ERROR)
    assert (error.body.job_id, error.body.code) == ("huge", "out_of_range") and "timeout_ms" in error.body.message
    long_id = {"req_id": "r" * 300, "job_id": "j" * 5000}
    client.send_raw([CLIENT_HEADER + bytes((Command.JOB_STATUS,)), msgpack.packb(long_id, use_bin_type=True)])
    error = client.recv_until(Command.ERROR)
    assert error.body.job_id is None and error.body.code == "protocol" and "job_id" in error.body.message
    forged = {"req_id": "r1", "model": "tone\nFORGED broker line"}
    client.send_raw([CLIENT_HEADER + bytes((Command.RELOAD,)), msgpack.packb(forged, use_bin_type=True)])
    assert client.recv_until(Command.ERROR).body.code == "protocol"
    worker_sock = fuzz_socket(ctx, broker.backend)
    ready = {"worker_id": "greedy", "engine": "greedy", "capacity": 1024}
    worker_sock.send_multipart([WORKER_HEADER + bytes((Command.W_READY,)), msgpack.packb(ready)])
    greedy = wait_for(lambda: [w for w in client.status().workers if w.worker_id == "greedy"], 10)
    assert greedy[0].capacity == 64  # clamped to max_worker_capacity
    worker_sock.send_multipart([WORKER_HEADER + bytes((Command.W_HEARTBEAT,)),
                                msgpack.packb({"stats": {"engine": {"blob": b"\xff\xfe"}}}, use_bin_type=True)])
    client.ping()
    assert client.status().broker_id
    worker_sock.send_multipart(encode(Command.W_DISCONNECT, body_for(Command.W_DISCONNECT, {})))
    tone_worker(broker, start_worker, client)
    normal_job(client, "after-huge")
    assert not any(line.startswith("FORGED") for line in broker.log().splitlines())

    # A journal holding such a job from an older broker: the restart skips it with one warning.
    assert broker.stop() == 0
    db = sqlite3.connect(str(broker.state_dir / "journal.sqlite3"))
    db.execute("INSERT INTO jobs (job_id, request, model, state, attempt, accepted_wall, workers)"
               " VALUES ('huge', ?, NULL, 'queued', 0, ?, '[]')", (msgpack.packb(huge), time.time()))
    db.commit()
    db.close()
    broker.start()
    client = RawClient(ctx, broker.frontend)
    wait_for(lambda: client.status().workers, 30, what="the tone worker to register again")
    normal_job(client, "after-restart")
    assert broker.proc is not None and broker.proc.alive()
    assert "1 unreadable or out-of-range rows skipped" in broker.log()
    assert_no_tracebacks(broker.log())


def test_a_result_over_max_result_bytes_fails_with_too_large(broker_factory, ctx: TrackedContext) -> None:
    broker = broker_factory("--max-result-bytes", "4096")
    client = RawClient(ctx, broker.frontend)
    worker = RawWorker(ctx, broker.backend)
    client.submit("big", "hello")
    worker.result(worker.next_job(), pcm=b"\x00" * 8192)
    error = client.recv_until(Command.ERROR)
    assert (error.body.code, error.body.retryable) == ("too_large", False)
    client.submit("small", "hello")
    worker.result(worker.next_job())
    assert client.recv_until(Command.RESULT).body.job_id == "small"


def test_a_worker_refuses_to_send_a_result_over_its_own_max_result_bytes(broker, start_worker,
                                                                          ctx: TrackedContext) -> None:
    client = RawClient(ctx, broker.frontend)
    start_worker(broker, "tone", env={"TTS_WORKER_MAX_RESULT_BYTES": "2048"})
    wait_for(lambda: client.status().workers, 30, what="tone worker READY")
    client.submit("long", "A sentence long enough to make more than two kilobytes of tone.", model="tone")
    error = client.recv_until(Command.ERROR, timeout_s=60)
    assert (error.body.job_id, error.body.code, error.body.retryable) == ("long", "too_large", False)
    assert "max_result_bytes" in error.body.message
