"""The seal of the broker core: one transition table, hooks isolated by one emit, indexed registries.

In-process, no sockets: the core is driven with explicit times (like test_lifecycle.py).
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tts_protocol import Command
from tts_protocol.constants import JobState, Priority
from tts_protocol.messages import Ready, Submit

from tts_broker.core import BrokerCore
from tts_broker.hooks import Hook, Hooks
from tts_broker.jobs import MOVES, IllegalMove, Job
from tts_broker.settings import BrokerSettings
from tts_broker.workers import WorkerRecord, WorkerRegistry

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]


def settings(**over: Any) -> BrokerSettings:
    return BrokerSettings(_env_file=None, **over)  # type: ignore[call-arg]


def job(job_id: str = "j1") -> Job:
    req = Submit(job_id=job_id, text="hello")
    return Job(request=req, priority=Priority.NORMAL, model=None, accepted_at=0.0)


def record(identity: bytes, *, engine: str = "tone", model: str = "v1", now: float = 0.0) -> WorkerRecord:
    ready = Ready(worker_id=identity.decode(), engine=engine, model=model)
    return WorkerRecord(identity=identity, ready=ready, registered_at=now, last_seen=now)


def test_every_state_has_its_moves_and_an_illegal_move_raises() -> None:
    assert set(MOVES) == set(JobState)
    assert MOVES[JobState.DONE] == frozenset()
    j = job()
    j.move_to(JobState.RUNNING)
    j.move_to(JobState.DONE)
    with pytest.raises(IllegalMove, match="no move from done to running"):
        j.move_to(JobState.RUNNING)
    with pytest.raises(IllegalMove):
        job().move_to(JobState.QUEUED)  # queued to queued is not a move: a transition that does it is a bug


class Boom(Hook):
    def recorded(self, job: Job, *, new: bool) -> None:
        raise RuntimeError("hook bug")


class Counter(Hook):
    def __init__(self) -> None:
        self.seen: list[str] = []

    def recorded(self, job: Job, *, new: bool) -> None:
        self.seen.append(job.job_id)


def test_a_failing_hook_is_logged_and_the_next_one_still_runs(caplog: pytest.LogCaptureFixture) -> None:
    counter = Counter()
    core = BrokerCore(settings(), [Boom(), counter])
    with caplog.at_level(logging.ERROR, logger="tts_broker.hooks"):
        core.life.submit(b"c", Submit(job_id="j1", text="hello"), 1.0, 1.0)
    assert counter.seen == ["j1"]
    assert [c for _, _, c, _, _ in core.outbox.now] == [Command.ACCEPTED]  # the transition went through
    assert any("hook Boom failed on recorded" in r.getMessage() for r in caplog.records)


def test_the_hook_list_is_fixed_at_construction() -> None:
    core = BrokerCore(settings(), [Counter()])
    assert isinstance(core.hooks.all, tuple)
    assert [type(h).__name__ for h in core.hooks] == ["Counter", "ReloadTracker"]
    assert Hooks([]).durable is False


def test_registry_finds_silent_workers_from_the_front_only() -> None:
    registry = WorkerRegistry()
    a, b, c = record(b"a", now=0.0), record(b"b", now=1.0), record(b"c", now=2.0)
    for r in (a, b, c):
        registry.add(r)
    registry.touch(a, 5.0)  # a speaks again: it goes to the back
    assert registry.silent(4.5, 3.0) == [b]  # b silent 3.5 s; c 2.5 s; a spoke at 5.0
    assert registry.silent(5.5, 3.0) == [b, c]
    registry.remove(b"b")
    assert registry.silent(5.5, 3.0) == [c]


def test_first_free_is_least_recently_used_per_key_and_counts_served_keys() -> None:
    registry = WorkerRegistry()
    tone1, piper, tone2 = record(b"t1"), record(b"p1", engine="piper", model="joe"), record(b"t2")
    for r in (tone1, piper, tone2):
        registry.add(r)
    assert registry.first_free("tone") is tone1 and registry.first_free(None) is tone1
    assert registry.first_free("piper:joe") is piper and registry.first_free("fish") is None
    registry.lease(tone1, ("j", 1), job("j"))  # busy (capacity 1): no longer free
    assert registry.first_free("tone") is tone2 and registry.first_free(None) is piper
    registry.release(tone1, ("j", 1))  # free again, at the back
    assert registry.first_free("tone") is tone2
    assert registry.serves_key("piper") and not registry.serves_key("fish")
    registry.remove(b"p1")
    assert not registry.serves_key("piper") and registry.first_free(None) is tone2


def test_dispatch_leases_to_the_least_recently_used_worker_across_keys() -> None:
    core = BrokerCore(settings())
    for identity, engine in ((b"w1", "tone"), (b"w2", "piper"), (b"w3", "tone")):
        core.life.worker_ready(identity, Ready(worker_id=identity.decode(), engine=engine, model="m"), 0.0)
    for job_id, model in (("a", None), ("b", "tone"), ("c", "tone"), ("d", "piper")):
        core.life.submit(b"c", Submit(job_id=job_id, text="hello", model=model), 0.0, 0.0)
    core.outbox.now.clear()
    core.dispatch(0.0)
    leased = {job_id: core.jobs.get(job_id).worker_identity for job_id in "abcd"}  # type: ignore[union-attr]
    assert leased == {"a": b"w1", "b": b"w3", "c": None, "d": b"w2"}
    assert [i for _, i, c, _, _ in core.outbox.now if c is Command.B_JOB] == [b"w1", b"w2", b"w3"]


class AlwaysCached(Hook):
    def may_answer(self, job: Job) -> bool:
        return True

    def lookup(self, job: Job) -> Any:
        from tts_broker.hooks import CachedAudio

        return CachedAudio("tone", "v1", 16000, 1, "s16le", b"\x00\x00" * 4)


def test_a_job_set_aside_for_the_cache_is_its_owner_s_alone() -> None:
    from tts_protocol.codec import Message

    from tts_broker.auth import Principal

    core = BrokerCore(settings(), [AlwaysCached()])
    submit = Message(Command.SUBMIT, Submit(job_id="same", text="hello"))
    core.on_client(b"alice", Principal("client", "alice"), submit, 1.0, 1.0)
    core.on_client(b"bob", Principal("client", "bob"), submit, 1.0, 1.0)  # the same id, another key, same turn
    core.on_client(b"alice-2", Principal("client", "alice"), submit, 1.0, 1.0)  # the owner again: it attaches
    [(_, to, code)] = [(w, i, b.code) for w, i, c, b, _ in core.outbox.now if c is Command.ERROR]
    assert (to, code) == (b"bob", "forbidden")
    core.outbox.now.clear()
    [job] = core.pending_lookups()  # the server's I/O step between turns
    core.on_lookup(job, core.hooks.lookup(job), 1.0)
    assert sorted(i for _, i, c, _, _ in core.outbox.now if c is Command.RESULT) == [b"alice", b"alice-2"]
    assert core.jobs.get("same").state is JobState.DONE  # type: ignore[union-attr]


def test_a_malformed_message_under_another_keys_routing_id_is_dropped_unanswered(tmp_path: Any) -> None:
    """Under CURVE the key check comes first: nothing (not even an ERROR) goes to a routing id bound to another
    key because of a message its new holder sent (the server would hold that ERROR for the id's owner)."""
    from tts_protocol import ProtocolError
    from tts_protocol.codec import Message

    from tts_broker.auth import Principal

    core = BrokerCore(settings(curve_secret=str(tmp_path / "broker.key_secret"), client_keys=str(tmp_path),
                               worker_keys=str(tmp_path)))
    alice, mallory = Principal("client", "alice"), Principal("client", "mallory")
    assert core.on_client(b"alice", alice, Message(Command.SUBMIT, Submit(job_id="j", text="hi")), 1.0, 1.0)
    core.outbox.now.clear()
    assert not core.on_client(b"alice", mallory, ProtocolError("garbage"), 1.0, 1.0)
    assert core.outbox.now == []
    assert core.on_client(b"alice", alice, ProtocolError("garbage"), 1.0, 1.0), "the owner's is answered"
    assert [c for _, _, c, _, _ in core.outbox.now] == [Command.ERROR]
