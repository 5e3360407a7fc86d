"""Journal, retention across restarts, the result cache, the dead-letter list and RETRY (raw peers)."""

from __future__ import annotations

import pytest
import zmq

from tts_protocol import Command
from tts_protocol.constants import JobState

from harness import BrokerProc
from peers import RawClient, RawWorker

pytestmark = pytest.mark.timeout(60)


def jobs(client: RawClient, state: str | None = None, limit: int = 1000) -> list:
    fields = {"limit": limit} if state is None else {"state": state, "limit": limit}
    return client.request(Command.JOBS, Command.JOBS_REPLY, **fields).body.jobs


def test_every_accepted_job_survives_a_kill_9(broker: BrokerProc, ctx: zmq.Context) -> None:
    client = RawClient(ctx, broker.frontend)
    for i in range(200):
        client.submit(f"d{i}", f"line {i}")
    accepted = {client.recv_until(Command.ACCEPTED).body.job_id for _ in range(200)}
    assert len(accepted) == 200
    broker.kill()  # SIGKILL: no drain, no clean close
    broker.start()
    fresh = RawClient(ctx, broker.frontend)  # the original client is gone too
    listed = jobs(fresh)
    assert {j.job_id for j in listed} == accepted
    assert all(j.state is JobState.QUEUED for j in listed)


def test_running_job_is_requeued_after_restart_and_fetched_later_by_id(broker: BrokerProc, ctx: zmq.Context) -> None:
    client = RawClient(ctx, broker.frontend)
    worker = RawWorker(ctx, broker.backend)
    client.submit("crash-mid-job", "hello")
    first = worker.next_job()
    assert first.attempt == 1
    broker.kill()
    broker.start()
    worker2 = RawWorker(ctx, broker.backend)
    retry = worker2.next_job()
    assert (retry.job_id, retry.attempt) == ("crash-mid-job", 2)  # the attempt count survived
    worker2.result(retry, b"\x05\x00" * 3)
    # A new client that never submitted it fetches the result by id, without a second synthesis.
    late = RawClient(ctx, broker.frontend)
    late.submit("crash-mid-job", "hello")
    result = late.recv_until(Command.RESULT)
    assert result.payload == b"\x05\x00" * 3 and result.body.attempt == 2
    worker2.assert_quiet(via=late)


def test_finished_results_are_retained_across_a_restart(broker: BrokerProc, ctx: zmq.Context) -> None:
    client = RawClient(ctx, broker.frontend)
    worker = RawWorker(ctx, broker.backend)
    client.submit("kept", cache=False)
    worker.result(worker.next_job(), b"\x09\x00")
    client.recv_until(Command.RESULT)
    broker.kill()
    broker.start()
    again = RawClient(ctx, broker.frontend)
    again.submit("kept", cache=False)
    assert again.recv_until(Command.RESULT).payload == b"\x09\x00"


def test_no_journal_flag_keeps_nothing(broker_factory, ctx: zmq.Context) -> None:
    broker = broker_factory("--no-journal")
    client = RawClient(ctx, broker.frontend)
    client.submit("volatile")
    client.recv_until(Command.ACCEPTED)
    broker.kill()
    broker.start()
    assert jobs(RawClient(ctx, broker.frontend)) == []


def test_identical_deterministic_request_is_served_from_the_cache(broker: BrokerProc, ctx: zmq.Context) -> None:
    client = RawClient(ctx, broker.frontend)
    worker = RawWorker(ctx, broker.backend)
    client.submit("c1", "cache me", model="tone", speaker="amy", voice={"length_scale": 1.0})
    job = worker.next_job()
    worker.send(Command.W_RESULT, {"job_id": job.job_id, "attempt": 1, "sample_rate": 16000,
                                   "deterministic": True}, b"\x01\x02" * 50)
    assert client.recv_until(Command.RESULT).body.cached is False
    client.submit("c2", "cache me", model="tone", speaker="amy", voice={"length_scale": 1.0})
    hit = client.recv_until(Command.RESULT)
    assert hit.body.cached and hit.body.worker_id == "cache" and hit.payload == b"\x01\x02" * 50
    # The hit never reaches the worker: the next JOB it sees is c3 (a sentinel RELOAD would clear the cache).
    # Any difference in what shapes the audio is a miss; cache=False opts out.
    for job_id, fields in [("c3", {"speaker": "bob"}), ("c4", {"voice": {"length_scale": 1.1}}),
                           ("c5", {"cache": False})]:
        merged = {"model": "tone", "speaker": "amy", "voice": {"length_scale": 1.0}, **fields}
        client.submit(job_id, "cache me", **merged)
        got = worker.next_job()
        assert got.job_id == job_id
        worker.result(got)
        assert client.recv_until(Command.RESULT).body.cached is False
    status = client.status()
    assert status.jobs["cache"]["hits"] == 1 and status.jobs["cache"]["stores"] == 1


def test_nondeterministic_results_are_not_cached_unless_asked(broker: BrokerProc, ctx: zmq.Context) -> None:
    client = RawClient(ctx, broker.frontend)
    worker = RawWorker(ctx, broker.backend)
    for job_id, cache in [("n1", None), ("n2", None), ("n3", True), ("n4", None)]:
        client.submit(job_id, "sampled", model="tone", **({} if cache is None else {"cache": cache}))
        if job_id == "n4":
            assert client.recv_until(Command.RESULT).body.cached  # n3 asked to be cached
            break
        worker.result(worker.next_job())  # deterministic defaults to False
        assert client.recv_until(Command.RESULT).body.cached is False


def test_dead_letter_list_and_retry(broker_factory, ctx: zmq.Context) -> None:
    broker = broker_factory("--max-attempts", "2")
    client = RawClient(ctx, broker.frontend)
    worker = RawWorker(ctx, broker.backend)
    client.submit("poison", "boom")
    for _ in range(2):
        worker.fail(worker.next_job(), code="crashed", retryable=True)
    client.recv_until(Command.ERROR)
    dead = jobs(client, "failed")
    assert [j.job_id for j in dead] == ["poison"]
    assert dead[0].error.code == "max_attempts" and dead[0].workers == [worker.worker_id] * 2
    view = client.request(Command.RETRY, Command.JOB_STATUS_REPLY, job_id="poison").body.job
    assert view.state is JobState.QUEUED and view.attempt == 2  # attempt numbers go on: leases stay unique
    job = worker.next_job()
    assert (job.job_id, job.attempt) == ("poison", 3)
    worker.result(job)
    assert jobs(client, "failed") == []
    assert client.request(Command.RETRY, Command.ERROR, job_id="poison").body.code == "bad_request"
    assert client.request(Command.RETRY, Command.ERROR, job_id="ghost").body.code == "not_found"


def test_resubmitting_a_job_that_failed_retryably_runs_it_again(broker_factory, ctx: zmq.Context) -> None:
    broker = broker_factory("--unroutable-timeout-s", "0.2")
    client = RawClient(ctx, broker.frontend)
    client.submit("later", model="tone")
    assert client.recv_until(Command.ERROR).body.code == "no_workers"
    worker = RawWorker(ctx, broker.backend)
    client.submit("later", model="tone")  # same id: not the stale error, a new run
    job = worker.next_job()
    assert (job.job_id, job.attempt) == ("later", 1)
    worker.result(job)
    assert client.recv_until(Command.RESULT).body.job_id == "later"
