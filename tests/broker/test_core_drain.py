"""The broker's drain (SIGTERM) in the core: when it is over, and what queued jobs get then (no sockets).

The drain ends early once nothing can change: no job running and no connected worker that takes new leases
serves the key of a queued job. With a journal the queued jobs stay queued for the next start; without one they
get shutting_down at once. Otherwise it lasts until the jobs finish or the grace period runs out.
"""

from __future__ import annotations

import pytest

from tts_protocol import Command
from tts_protocol.constants import JobState
from tts_protocol.messages import Ready

from tests.broker.test_lifecycle import C1, W1, W2, Recorder, join, make, result, sent, submit, unpack
from tts_broker.core import BrokerCore

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]


def errors(life: BrokerCore) -> list[tuple[str, str]]:
    return [(unpack(b)["job_id"], unpack(b)["code"]) for _, _, c, b in sent(life) if c is Command.ERROR]


def test_queued_jobs_and_no_worker_end_the_drain_at_once_and_the_journal_keeps_them() -> None:
    hook = Recorder()  # durable: stands for the journal
    life = make(hook, drain_grace_s=30.0)
    submit(life, "a")
    submit(life, "b", model="fish-speech")
    sent(life)
    records = len(hook.records)
    life.start_drain(0.0)
    assert life.drain_finished(0.0)
    assert errors(life) == []  # no shutting_down: the clients resubmit to the next start and attach
    assert [life.jobs.get(j).state for j in ("a", "b")] == [JobState.QUEUED, JobState.QUEUED]  # type: ignore[union-attr]
    assert len(hook.records) == records  # nothing new to journal: the rows say queued


def test_without_a_journal_the_queued_jobs_get_shutting_down_at_once() -> None:
    life = make(drain_grace_s=30.0)
    submit(life, "a")
    sent(life)
    life.start_drain(0.0)
    assert life.drain_finished(0.0)
    assert errors(life) == [("a", "shutting_down")]


def test_a_worker_that_serves_the_queued_jobs_keeps_the_drain_going() -> None:
    life = make(Recorder(), drain_grace_s=30.0)
    worker = join(life, capacity=1)
    submit(life, "a")
    submit(life, "b")
    life.dispatch(0.0)
    life.start_drain(0.0)
    assert not life.drain_finished(1.0)  # "a" runs
    life.life.complete(worker, result("a"), b"\x00\x00", 1.0)
    assert not life.drain_finished(1.0)  # "b" is queued and the worker takes leases: it gets it
    life.dispatch(1.0)
    life.life.complete(worker, result("b"), b"\x00\x00", 2.0)
    assert life.drain_finished(2.0)


def test_a_running_job_keeps_the_drain_going_even_with_no_worker_for_the_queue() -> None:
    life = make(Recorder(), drain_grace_s=30.0)
    worker = join(life, capacity=1)
    submit(life, "runs")
    life.dispatch(0.0)
    submit(life, "fish", model="fish-speech")  # nobody serves it
    life.start_drain(0.0)
    assert not life.drain_finished(1.0)
    life.life.complete(worker, result("runs"), b"\x00\x00", 1.0)
    assert life.drain_finished(1.0)
    assert life.jobs.get("fish").state is JobState.QUEUED  # type: ignore[union-attr]


def test_a_worker_that_is_draining_itself_does_not_count() -> None:
    life = make(Recorder(), drain_grace_s=30.0)
    leaving = join(life, W1)
    life.life.worker_ready(W2, Ready(worker_id="worker-2", engine="piper", model="amy", capacity=1), 0.0)
    submit(life, "a", model="tone:v1")
    sent(life)
    life.start_drain(0.0)
    assert not life.drain_finished(0.0)  # W1 takes leases and serves tone:v1 (it gets "a" at the next dispatch)
    life.workers.drain(leaving)  # DRAIN_WORKER (a supervisor retiring it), still connected: it takes no lease
    assert life.drain_finished(0.0)
    assert life.workers.get(W1) is not None and not life.workers.takes_key("tone:v1")
    assert life.workers.serves_key("tone:v1")  # the unroutable timer still counts it


def test_paused_keys_count_as_not_served() -> None:
    life = make(Recorder(), drain_grace_s=30.0)
    join(life)
    life.dispatcher.pause("tone")
    submit(life, "held", model="tone")
    life.start_drain(0.0)
    assert life.drain_finished(0.0)


def test_the_grace_period_still_ends_a_drain_that_waits_for_a_worker() -> None:
    hook = Recorder()
    life = make(hook, drain_grace_s=5.0)
    join(life)
    submit(life, "a")
    life.dispatch(0.0)
    submit(life, "b", identity=C1)
    sent(life)
    life.start_drain(0.0)
    assert not life.drain_finished(4.9)
    assert life.drain_finished(5.0)
    assert sorted(errors(life)) == [("a", "shutting_down"), ("b", "shutting_down")]


def test_the_worker_registry_counts_workers_taking_leases_per_key() -> None:
    life = make()
    a = join(life, W1)
    join(life, W2)
    registry = life.workers
    assert registry.takes_key("tone:v1") and registry.takes_key("tone") and registry.takes_key(None)
    registry.drain(a)
    registry.drain(a)  # twice: counted once
    assert registry.takes_key("tone:v1")
    registry.remove(W2)
    assert not registry.takes_key("tone:v1") and registry.serves_key("tone:v1")
    registry.remove(W1)
    assert not registry.serves_key("tone:v1")
    join(life, W1)
    assert registry.takes_key("tone:v1")
