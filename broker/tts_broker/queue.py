"""The waiting room: queued jobs by priority level and routing key, shared fairly between clients.

A job asks for a routing key (`model`: None, `ENGINE` or `ENGINE:MODEL`); a worker serves a small set of
keys. Each (level, key) bucket keeps one FIFO per client (`Job.client`, the submitter's routing id) with the
clients in round-robin order, so a free worker finds its next job in O(keys it serves), whatever the queue
holds, and one client's 10,000 queued jobs do not starve another client's one (PROTOCOL.md section 5,
Fairness). Across the buckets a worker serves, the client served least recently at that level goes first.
"""

from __future__ import annotations

import collections
import itertools
from typing import Collection, Iterable, Iterator, Optional

from tts_protocol.constants import Priority

from tts_broker.jobs import Job

LEVELS = (Priority.HIGH, Priority.NORMAL, Priority.LOW)
STICKY_LOOKAHEAD = 16

Fifo = collections.OrderedDict[str, Job]


class _Bucket:
    """The queued jobs of one (level, routing key): a FIFO per client, clients in round-robin order."""

    __slots__ = ("ring",)

    def __init__(self) -> None:
        self.ring: collections.OrderedDict[bytes, Fifo] = collections.OrderedDict()

    def head(self, blocked: Collection[bytes]) -> Optional[Job]:
        """The first job of the first client in turn that is not `blocked`."""
        for client, fifo in self.ring.items():
            if client not in blocked:
                return next(iter(fifo.values()))
        return None

    def first(self, count: int, blocked: Collection[bytes]) -> Iterator[Job]:
        """Up to `count` jobs, clients in turn, each client's oldest first (the sticky lookahead window)."""
        left = count
        for client, fifo in self.ring.items():
            if left <= 0:
                return
            if client in blocked:
                continue
            for job in itertools.islice(fifo.values(), left):
                left -= 1
                yield job


class JobQueue:
    """Queued jobs. Requeued jobs go to the front of their level (and their client's turn); new ones to the back."""

    def __init__(self) -> None:
        self._levels: dict[Priority, dict[Optional[str], _Bucket]] = {level: {} for level in LEVELS}
        self._depth = 0
        self._by_level = {level: 0 for level in LEVELS}
        self._by_client: collections.Counter[bytes] = collections.Counter()
        self._client_level: dict[Priority, collections.Counter[bytes]] = {
            level: collections.Counter() for level in LEVELS
        }
        self._last_served: dict[Priority, dict[bytes, int]] = {level: {} for level in LEVELS}
        self._served = itertools.count(1)
        self._back = itertools.count(1)
        self._front = itertools.count(-1, -1)

    def __len__(self) -> int:
        return self._depth

    def depth_by_priority(self) -> dict[str, int]:
        return {level.value: count for level, count in self._by_level.items()}

    def queued_by(self, client: bytes) -> int:
        """How many jobs of `client` are queued (the per-client cap)."""
        return self._by_client.get(client, 0)

    @property
    def client_count(self) -> int:
        """Clients with at least one queued job."""
        return len(self._by_client)

    def levels(self) -> Iterator[tuple[Priority, Optional[str], int, float]]:
        """(priority, routing key, queued jobs, acceptance time of the oldest) for each non-empty bucket.

        The oldest is looked for among each client's first few jobs: requeued jobs go to the front, new ones to
        the back, so the earliest acceptance is at a FIFO's head unless a requeue reordered it.
        """
        for level, by_key in self._levels.items():
            for key, bucket in by_key.items():
                count = sum(len(fifo) for fifo in bucket.ring.values())
                if not count:
                    continue
                oldest = min(job.accepted_at for fifo in bucket.ring.values()
                             for job in itertools.islice(fifo.values(), STICKY_LOOKAHEAD))
                yield level, key, count, oldest

    def push(self, job: Job, *, front: bool = False) -> None:
        job.queue_seq = next(self._front) if front else next(self._back)
        bucket = self._levels[job.priority].get(job.model)
        if bucket is None:
            bucket = self._levels[job.priority][job.model] = _Bucket()
        fifo = bucket.ring.get(job.client)
        if fifo is None:
            fifo = bucket.ring[job.client] = collections.OrderedDict()
            last = self._last_served[job.priority]
            if job.client not in last and any(client in last for client in itertools.islice(bucket.ring, 1)):
                # A client with nothing served at this level lately goes ahead of those that had a turn.
                bucket.ring.move_to_end(job.client, last=False)
        fifo[job.job_id] = job
        if front:
            fifo.move_to_end(job.job_id, last=False)
            bucket.ring.move_to_end(job.client, last=False)
        self._depth += 1
        self._by_level[job.priority] += 1
        self._by_client[job.client] += 1
        self._client_level[job.priority][job.client] += 1

    def remove(self, job: Job) -> bool:
        level, client = job.priority, job.client
        bucket = self._levels[level].get(job.model)
        fifo = bucket.ring.get(client) if bucket is not None else None
        if bucket is None or fifo is None or fifo.pop(job.job_id, None) is None:
            return False
        if not fifo:
            del bucket.ring[client]
            if not bucket.ring:
                del self._levels[level][job.model]
        self._depth -= 1
        self._by_level[level] -= 1
        _decrement(self._by_client, client)
        if not _decrement(self._client_level[level], client):
            # Nothing of this client left at this level: when it comes back it is owed a turn first.
            self._last_served[level].pop(client, None)
        return True

    def keys(self) -> set[Optional[str]]:
        """Routing keys that have queued jobs."""
        return {key for level in self._levels.values() for key in level}

    def jobs_for_key(self, key: Optional[str]) -> Iterator[Job]:
        for level in LEVELS:
            bucket = self._levels[level].get(key)
            if bucket:
                yield from [job for fifo in bucket.ring.values() for job in fifo.values()]

    def take_for(
        self,
        served: Iterable[Optional[str]],
        *,
        warm: frozenset[str] = frozenset(),
        now: float = 0.0,
        sticky_max_wait_s: float = 0.0,
        blocked: Collection[bytes] = frozenset(),
    ) -> Optional[Job]:
        """Remove and return the job a free worker serving `served` keys should run next, or None.

        Highest level first. Within it, requeued jobs first, then the head job of the client served least
        recently (oldest first among equals), unless one of the first few jobs is for a speaker the worker
        holds warm and the fair choice has not yet waited `sticky_max_wait_s`. Clients in `blocked` (at
        their in-flight cap) are passed over.
        """
        served = tuple(served)
        for level in LEVELS:
            buckets = [b for key in served if (b := self._levels[level].get(key))]
            if not buckets:
                continue
            heads = [job for b in buckets if (job := b.head(blocked)) is not None]
            if not heads:
                continue
            last = self._last_served[level]
            job = min(heads, key=lambda j: (j.queue_seq >= 0, last.get(j.client, 0), j.queue_seq))
            if warm and job.request.speaker not in warm and now - job.accepted_at < sticky_max_wait_s:
                job = self._warm(buckets, warm, blocked) or job
            self._take(job)
            return job
        return None

    def _take(self, job: Job) -> None:
        level, client = job.priority, job.client
        self.remove(job)
        bucket = self._levels[level].get(job.model)
        if bucket is not None and client in bucket.ring:
            bucket.ring.move_to_end(client)  # its turn in this bucket is over
        if self._client_level[level].get(client):
            self._last_served[level][client] = next(self._served)

    @staticmethod
    def _warm(buckets: list[_Bucket], warm: frozenset[str], blocked: Collection[bytes]) -> Optional[Job]:
        window = sorted((job for b in buckets for job in b.first(STICKY_LOOKAHEAD, blocked)),
                        key=lambda j: j.queue_seq)[:STICKY_LOOKAHEAD]
        for job in window:
            if job.request.speaker in warm:
                return job
        return None


def _decrement(counter: collections.Counter[bytes], key: bytes) -> int:
    left = counter[key] - 1
    if left > 0:
        counter[key] = left
    else:
        del counter[key]
    return left
