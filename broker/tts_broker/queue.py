"""The waiting room: queued jobs by priority level and routing key, FIFO within each.

A job asks for a routing key (`model`: None, `ENGINE` or `ENGINE:MODEL`); a worker serves a small set of
keys. Keeping one ordered map per (level, key) lets a free worker find its oldest job in O(keys it serves)
instead of scanning every queued job, so a broker with 10,000 queued jobs for mixed models stays fast.
"""

from __future__ import annotations

import collections
import itertools
from typing import Iterable, Iterator, Optional

from tts_protocol.constants import Priority

from tts_broker.jobs import Job

LEVELS = (Priority.HIGH, Priority.NORMAL, Priority.LOW)
STICKY_LOOKAHEAD = 16


class JobQueue:
    """Queued jobs. Requeued jobs go to the front of their level; new ones to the back."""

    def __init__(self) -> None:
        self._levels: dict[Priority, dict[Optional[str], collections.OrderedDict[str, Job]]] = {
            level: {} for level in LEVELS
        }
        self._depth = 0
        self._by_level = {level: 0 for level in LEVELS}
        self._back = itertools.count(1)
        self._front = itertools.count(-1, -1)

    def __len__(self) -> int:
        return self._depth

    def depth_by_priority(self) -> dict[str, int]:
        return {level.value: count for level, count in self._by_level.items()}

    def levels(self) -> Iterator[tuple[Priority, Optional[str], int, float]]:
        """(priority, routing key, queued jobs, acceptance time of the oldest) for each non-empty bucket.

        The oldest is looked for among the bucket's first few jobs: requeued jobs go to the front, new ones to
        the back, so the earliest acceptance is at the head unless a requeue reordered it.
        """
        for level, by_key in self._levels.items():
            for key, bucket in by_key.items():
                heads = itertools.islice(bucket.values(), STICKY_LOOKAHEAD)
                yield level, key, len(bucket), min(job.accepted_at for job in heads)

    def push(self, job: Job, *, front: bool = False) -> None:
        job.queue_seq = next(self._front) if front else next(self._back)
        bucket = self._levels[job.priority].setdefault(job.model, collections.OrderedDict())
        bucket[job.job_id] = job
        if front:
            bucket.move_to_end(job.job_id, last=False)
        self._depth += 1
        self._by_level[job.priority] += 1

    def remove(self, job: Job) -> bool:
        bucket = self._levels[job.priority].get(job.model)
        if bucket is None or bucket.pop(job.job_id, None) is None:
            return False
        if not bucket:
            del self._levels[job.priority][job.model]
        self._depth -= 1
        self._by_level[job.priority] -= 1
        return True

    def keys(self) -> set[Optional[str]]:
        """Routing keys that have queued jobs."""
        return {key for level in self._levels.values() for key in level}

    def jobs_for_key(self, key: Optional[str]) -> Iterator[Job]:
        for level in LEVELS:
            bucket = self._levels[level].get(key)
            if bucket:
                yield from list(bucket.values())

    def take_for(
        self,
        served: Iterable[Optional[str]],
        *,
        warm: frozenset[str] = frozenset(),
        now: float = 0.0,
        sticky_max_wait_s: float = 0.0,
    ) -> Optional[Job]:
        """Remove and return the job a free worker serving `served` keys should run next, or None.

        Highest level first; within it the oldest job, unless one of the oldest few is for a speaker the
        worker holds warm and the oldest has not yet waited `sticky_max_wait_s`.
        """
        served = tuple(served)
        for level in LEVELS:
            buckets = [b for key in served if (b := self._levels[level].get(key))]
            if not buckets:
                continue
            if len(buckets) == 1 and not warm:
                job = next(iter(buckets[0].values()))
            else:
                job = self._pick(buckets, warm, now, sticky_max_wait_s)
            self.remove(job)
            return job
        return None

    @staticmethod
    def _pick(
        buckets: list[collections.OrderedDict[str, Job]],
        warm: frozenset[str],
        now: float,
        sticky_max_wait_s: float,
    ) -> Job:
        oldest = min((next(iter(b.values())) for b in buckets), key=lambda j: j.queue_seq)
        if not warm or oldest.request.speaker in warm or now - oldest.accepted_at >= sticky_max_wait_s:
            return oldest
        heads = sorted(
            (job for b in buckets for job in itertools.islice(b.values(), STICKY_LOOKAHEAD)),
            key=lambda j: j.queue_seq,
        )[:STICKY_LOOKAHEAD]
        for job in heads:
            if job.request.speaker in warm:
                return job
        return oldest
