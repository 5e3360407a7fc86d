"""JobQueue in-process: priority levels, FIFO within a level, requeue to the front, routing keys, sticky routing.

PROTOCOL.md section 5 (Dispatch, Sticky routing) is the contract these pin: the order jobs come out in is
asserted exactly, job by job.
"""

from __future__ import annotations

from typing import Iterable, Optional

import pytest

from tts_protocol.constants import Priority
from tts_protocol.messages import Submit

from tts_broker.jobs import Job
from tts_broker.queue import LEVELS, STICKY_LOOKAHEAD, JobQueue

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]

ALL_KEYS: tuple[Optional[str], ...] = (None, "piper", "piper:joe", "tone")


def make_job(job_id: str, *, priority: Priority = Priority.NORMAL, model: Optional[str] = None,
             speaker: Optional[str] = None, accepted_at: float = 0.0) -> Job:
    request = Submit(job_id=job_id, text=f"text of {job_id}", speaker=speaker, model=model, priority=priority)
    return Job(request=request, priority=priority, model=model, accepted_at=accepted_at)


def drain(queue: JobQueue, served: Iterable[Optional[str]] = ALL_KEYS, *, warm: frozenset[str] = frozenset(),
          now: float = 0.0, sticky_max_wait_s: float = 0.0) -> list[str]:
    """Take jobs until the queue has none for `served`; their ids in the order they came out."""
    keys = tuple(served)
    taken = []
    while (job := queue.take_for(keys, warm=warm, now=now, sticky_max_wait_s=sticky_max_wait_s)) is not None:
        taken.append(job.job_id)
    return taken


def test_levels_are_highest_first_and_fifo_within_a_level() -> None:
    queue = JobQueue()
    for job_id, priority in [("low-1", Priority.LOW), ("normal-1", Priority.NORMAL), ("high-1", Priority.HIGH),
                             ("low-2", Priority.LOW), ("normal-2", Priority.NORMAL), ("high-2", Priority.HIGH),
                             ("normal-3", Priority.NORMAL)]:
        queue.push(make_job(job_id, priority=priority))
    assert LEVELS == (Priority.HIGH, Priority.NORMAL, Priority.LOW)
    assert len(queue) == 7
    assert queue.depth_by_priority() == {"high": 2, "normal": 3, "low": 2}
    assert drain(queue) == ["high-1", "high-2", "normal-1", "normal-2", "normal-3", "low-1", "low-2"]
    assert len(queue) == 0
    assert queue.depth_by_priority() == {"high": 0, "normal": 0, "low": 0}
    assert queue.take_for(ALL_KEYS) is None


def test_requeue_goes_to_the_front_of_its_own_level_only() -> None:
    queue = JobQueue()
    for job_id in ("a", "b", "c"):
        queue.push(make_job(job_id))
    first = queue.take_for([None])
    second = queue.take_for([None])
    assert first is not None and second is not None and (first.job_id, second.job_id) == ("a", "b")
    queue.push(first, front=True)
    queue.push(second, front=True)  # the later requeue goes first
    queue.push(make_job("urgent", priority=Priority.HIGH))
    queue.push(make_job("d"))
    assert drain(queue) == ["urgent", "b", "a", "c", "d"]


def test_requeue_to_the_front_across_routing_keys() -> None:
    queue = JobQueue()
    queue.push(make_job("any-1"))
    queue.push(make_job("piper-1", model="piper"))
    taken = queue.take_for(["piper"])
    assert taken is not None and taken.job_id == "piper-1"
    queue.push(taken, front=True)
    assert drain(queue, [None, "piper"]) == ["piper-1", "any-1"]


def test_routing_keys_none_engine_and_engine_model() -> None:
    queue = JobQueue()
    for job_id, model in [("any-1", None), ("tone-1", "tone"), ("piper-1", "piper"), ("joe-1", "piper:joe"),
                          ("amy-1", "piper:amy"), ("any-2", None), ("joe-2", "piper:joe")]:
        queue.push(make_job(job_id, model=model))
    assert queue.keys() == {None, "tone", "piper", "piper:joe", "piper:amy"}
    # A worker serves nil, its engine name and ENGINE:MODEL for its own model; oldest first across them.
    assert drain(queue, [None, "piper", "piper:joe"]) == ["any-1", "piper-1", "joe-1", "any-2", "joe-2"]
    assert len(queue) == 2
    assert queue.keys() == {"tone", "piper:amy"}
    assert drain(queue, ["tone"]) == ["tone-1"]
    assert drain(queue, ["piper:amy"]) == ["amy-1"]
    assert queue.keys() == set()


def test_a_higher_level_wins_over_an_older_job_for_another_key() -> None:
    queue = JobQueue()
    queue.push(make_job("any-normal"))
    queue.push(make_job("joe-low", model="piper:joe", priority=Priority.LOW))
    queue.push(make_job("joe-high", model="piper:joe", priority=Priority.HIGH))
    assert drain(queue, [None, "piper:joe"]) == ["joe-high", "any-normal", "joe-low"]


def test_a_worker_never_gets_a_job_for_a_key_it_does_not_serve() -> None:
    queue = JobQueue()
    queue.push(make_job("fish-1", model="fish-speech", priority=Priority.HIGH))
    assert queue.take_for(["piper", None]) is None
    assert queue.take_for([]) is None
    assert len(queue) == 1 and queue.depth_by_priority()["high"] == 1


def test_warm_speaker_is_taken_before_older_cold_jobs() -> None:
    queue = JobQueue()
    for job_id, speaker in [("cold-1", "amy"), ("cold-2", "bob"), ("warm-1", "joe"), ("cold-3", "amy")]:
        queue.push(make_job(job_id, speaker=speaker, accepted_at=100.0))
    taken = drain(queue, [None], warm=frozenset({"joe"}), now=100.5, sticky_max_wait_s=2.0)
    assert taken == ["warm-1", "cold-1", "cold-2", "cold-3"]


def test_warm_oldest_is_simply_the_oldest() -> None:
    queue = JobQueue()
    queue.push(make_job("warm-1", speaker="joe", accepted_at=100.0))
    queue.push(make_job("warm-2", speaker="joe", accepted_at=100.0))
    assert drain(queue, [None], warm=frozenset({"joe"}), now=100.1, sticky_max_wait_s=2.0) == ["warm-1", "warm-2"]


@pytest.mark.parametrize(("now", "expected_first"), [(101.99, "warm"), (102.0, "cold-old"), (150.0, "cold-old")])
def test_a_job_passed_over_is_not_skipped_once_it_waited_sticky_max_wait(now: float, expected_first: str) -> None:
    queue = JobQueue()
    queue.push(make_job("cold-old", speaker="amy", accepted_at=100.0))
    queue.push(make_job("warm", speaker="joe", accepted_at=101.0))
    taken = queue.take_for([None], warm=frozenset({"joe"}), now=now, sticky_max_wait_s=2.0)
    assert taken is not None and taken.job_id == expected_first
    assert len(queue) == 1


def test_no_warm_set_means_plain_fifo_even_with_speakers() -> None:
    queue = JobQueue()
    queue.push(make_job("a", speaker="amy"))
    queue.push(make_job("b", speaker="joe"))
    assert drain(queue, [None], now=0.0, sticky_max_wait_s=100.0) == ["a", "b"]


@pytest.mark.parametrize(("cold_before", "expected_first"),
                         [(STICKY_LOOKAHEAD - 1, "warm"), (STICKY_LOOKAHEAD, "cold-0")])
def test_sticky_lookahead_is_the_oldest_sixteen(cold_before: int, expected_first: str) -> None:
    assert STICKY_LOOKAHEAD == 16  # PROTOCOL.md section 5
    queue = JobQueue()
    for i in range(cold_before):
        queue.push(make_job(f"cold-{i}", speaker="amy", accepted_at=10.0))
    queue.push(make_job("warm", speaker="joe", accepted_at=10.0))
    taken = queue.take_for([None], warm=frozenset({"joe"}), now=10.0, sticky_max_wait_s=2.0)
    assert taken is not None and taken.job_id == expected_first
    assert len(queue) == cold_before


@pytest.mark.parametrize(("pairs_before", "expected_first"), [(7, "warm"), (8, "any-0")])
def test_sticky_lookahead_counts_across_routing_keys(pairs_before: int, expected_first: str) -> None:
    queue = JobQueue()
    for i in range(pairs_before):  # interleaved: 2 x pairs_before older cold jobs over two keys
        queue.push(make_job(f"any-{i}", speaker="amy", accepted_at=10.0))
        queue.push(make_job(f"piper-{i}", model="piper", speaker="amy", accepted_at=10.0))
    queue.push(make_job("warm", model="piper", speaker="joe", accepted_at=10.0))
    # 7 pairs: the warm job is the 15th oldest, inside the window; 8 pairs: the 17th, outside it.
    taken = queue.take_for([None, "piper"], warm=frozenset({"joe"}), now=10.0, sticky_max_wait_s=2.0)
    assert taken is not None and taken.job_id == expected_first


def test_warm_routing_stays_within_the_highest_level() -> None:
    queue = JobQueue()
    queue.push(make_job("warm-low", speaker="joe", priority=Priority.LOW))
    queue.push(make_job("cold-high", speaker="amy", priority=Priority.HIGH))
    assert drain(queue, [None], warm=frozenset({"joe"}), now=0.0, sticky_max_wait_s=2.0) == ["cold-high", "warm-low"]


def test_remove_updates_depths_and_keys() -> None:
    queue = JobQueue()
    keep = make_job("keep", model="piper")
    gone = make_job("gone", model="tone", priority=Priority.HIGH)
    queue.push(keep)
    queue.push(gone)
    assert queue.remove(gone) is True
    assert queue.remove(gone) is False
    assert queue.remove(make_job("never-queued", model="piper")) is False
    assert len(queue) == 1
    assert queue.depth_by_priority() == {"high": 0, "normal": 1, "low": 0}
    assert queue.keys() == {"piper"}
    assert drain(queue) == ["keep"]


def test_jobs_for_key_in_dispatch_order_and_safe_to_remove_while_iterating() -> None:
    queue = JobQueue()
    jobs = [make_job("n-1", model="piper"), make_job("l-1", model="piper", priority=Priority.LOW),
            make_job("h-1", model="piper", priority=Priority.HIGH), make_job("n-2", model="piper"),
            make_job("other", model="tone")]
    for job in jobs:
        queue.push(job)
    seen = []
    for job in queue.jobs_for_key("piper"):
        seen.append(job.job_id)
        assert queue.remove(job)
    assert seen == ["h-1", "n-1", "n-2", "l-1"]
    assert [job.job_id for job in queue.jobs_for_key("piper")] == []
    assert [job.job_id for job in queue.jobs_for_key("tone")] == ["other"]
    assert list(queue.jobs_for_key(None)) == []
    assert len(queue) == 1
