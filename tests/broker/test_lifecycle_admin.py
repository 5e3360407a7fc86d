"""Pause/resume of a routing key and draining a worker, in the core (no sockets; fake clock)."""

from __future__ import annotations

import pytest

from tts_protocol import Command
from tts_protocol.constants import JobState

from tests.broker.test_lifecycle import C1, W1, W2, commands, join, make, result, sent, submit

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]


def test_paused_key_keeps_its_jobs_queued_and_others_flow() -> None:
    life = make()
    join(life)
    sent(life)
    life.dispatcher.pause("tone")
    submit(life, "held", model="tone")
    submit(life, "free", model="tone:v1")
    sent(life)
    life.dispatch(1.0)
    assert commands(life) == [(W1, Command.B_JOB)]
    held = life.jobs.get("held")
    assert held is not None and held.state is JobState.QUEUED and len(life.queue) == 1
    assert life.paused == {"tone"}


def test_paused_jobs_are_not_failed_as_unroutable_and_resume_dispatches() -> None:
    life = make(unroutable_timeout_s=1.0)
    life.dispatcher.pause("fish-speech")
    submit(life, "fish", model="fish-speech")
    sent(life)
    life.expire(0.5)
    life.expire(5.0)
    job = life.jobs.get("fish")
    assert job is not None and job.state is JobState.QUEUED  # no worker serves it, but it is paused: it waits
    life.dispatcher.resume("fish-speech")
    assert life.dirty and life.paused == set()
    life.expire(6.0)
    life.expire(8.0)
    assert job.state is JobState.FAILED  # once resumed, the unroutable timeout applies again


def test_draining_worker_gets_no_new_lease_and_leaves_when_its_job_is_answered() -> None:
    life = make()
    busy = join(life, W1)
    submit(life, "first")
    life.dispatch(0.0)
    sent(life)
    join(life, W2)
    life.dispatcher.drain_workers([busy], 0.0)
    assert busy.draining and busy.view(0.0).state == "draining"
    assert commands(life) == []  # it holds a job: it stays until that is answered
    submit(life, "second")
    sent(life)
    life.dispatch(0.5)
    assert commands(life) == [(W2, Command.B_JOB)]  # the new job goes to the other worker
    life.life.complete(busy, result("first"), b"\x00\x00" * 4, 1.0)
    life.dispatch(1.0)
    out = [(identity, command, body) for _, identity, command, body in sent(life)]
    assert (C1, Command.RESULT) in [(i, c) for i, c, _ in out]
    [bye] = [body for identity, command, body in out if command is Command.B_DISCONNECT]
    assert bye.reason == "drained"
    assert life.workers.get(W1) is None and life.workers.get(W2) is not None


def test_idle_worker_is_disconnected_at_once_and_matching_finds_names_and_hosts() -> None:
    life = make()
    a = join(life, W1, name="box/0", host="box")
    join(life, W2, name="other/0", host="other")
    assert life.workers.matching(worker="box/0") == [a]
    assert life.workers.matching(worker=W1.decode()) == [a]
    assert [w.identity for w in life.workers.matching(host="other")] == [W2]
    assert life.workers.matching(worker="nobody") == []
    sent(life)
    life.dispatcher.drain_workers([a], 0.0)
    assert commands(life) == [(W1, Command.B_DISCONNECT)]
    assert life.workers.get(W1) is None
