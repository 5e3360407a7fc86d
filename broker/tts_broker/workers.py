"""Connected workers: who they are, what they serve, their leases, liveness and free slots (LRU).

The registry keeps its own indexes so that one event costs the same with 10 or 10,000 workers: free workers
by routing key (least recently used first), workers by the time they were last heard from (the silent ones
are at the front), a count of workers per served key (all of them, and those that take new leases, i.e. not
draining), and draining workers with no lease left. Nothing here scans every worker per message or per tick.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
from typing import Any, Iterator, Optional

from tts_protocol import routing
from tts_protocol.messages import Ready, WorkerView

from tts_broker.jobs import Job
from tts_broker.status_budget import bounded_stats

Lease = tuple[str, int]  # (job_id, attempt)


@dataclasses.dataclass(slots=True, eq=False)
class WorkerRecord:
    """One registered worker socket. `leases` maps a lease to its job, or None once revoked."""

    identity: bytes
    ready: Ready
    registered_at: float
    last_seen: float
    leases: dict[Lease, Optional[Job]] = dataclasses.field(default_factory=dict)
    stats: dict[str, Any] = dataclasses.field(default_factory=dict)
    warm: frozenset[str] = frozenset()
    #: warm, engine_stats and supervisor as views show them: within status_budget.WORKER_STATS_BUDGET bytes.
    shown: tuple[list[str], dict[str, Any], dict[str, Any]] = ([], {}, {})
    jobs_done: int = 0
    jobs_failed: int = 0
    key: Optional[str] = None  # ZAP User-Id ("worker:NAME") of its connection under CURVE
    draining: bool = False  # DRAIN_WORKER: no new leases; DISCONNECT once its leases are answered
    free_seq: int = 0  # when it last joined the free list: lower = less recently used
    advertised: Optional[int] = None  # the last HEARTBEAT `capacity` (adaptive workers); None: READY's

    @property
    def worker_id(self) -> str:
        return self.ready.worker_id

    @property
    def public_id(self) -> str:
        """What clients are told did the job: the routing id without CURVE, the key name and pid with it."""
        if self.key is None:
            return self.ready.worker_id
        return f"{self.key.partition(':')[2]}/{self.ready.pid}"

    @property
    def capacity(self) -> int:
        """Jobs this worker takes at once now: its last HEARTBEAT `capacity`, else READY's."""
        return self.ready.capacity if self.advertised is None else self.advertised

    @property
    def free_slots(self) -> int:
        return self.capacity - len(self.leases)

    @property
    def served_keys(self) -> tuple[Optional[str], ...]:
        return routing.served_keys(self.ready.engine, self.ready.model)

    def serves(self, key: Optional[str]) -> bool:
        return key in self.served_keys

    def held_jobs(self) -> list[Job]:
        """Jobs whose current lease this worker holds (revoked leases excluded)."""
        return [job for job in self.leases.values() if job is not None]

    def update_stats(self, stats: dict[str, Any]) -> None:
        # Only the figures the broker reads are kept: a heartbeat may carry megabytes within the limits.
        self.stats = {k: v for k, v in stats.items()
                      if isinstance(v, (int, float)) and not isinstance(v, bool) and len(k) <= 64}
        warm = stats.get("warm")
        if isinstance(warm, list):
            self.warm = frozenset(str(name) for name in warm[:256])
        self.shown = bounded_stats(stats)

    def view(self, now: float) -> WorkerView:
        stats = self.stats
        ready = self.ready

        def num(key: str, default: Any = 0) -> Any:
            value = stats.get(key, default)
            return value if isinstance(value, (int, float)) and not isinstance(value, bool) else default

        return WorkerView(
            worker_id=self.worker_id,
            name=ready.name,
            host=ready.host,
            pid=ready.pid,
            engine=ready.engine,
            model=ready.model,
            device=ready.device,
            state="draining" if self.draining else "busy" if self.leases else "idle",
            capacity=self.capacity,
            busy=len(self.leases),
            jobs_done=self.jobs_done,
            jobs_failed=self.jobs_failed,
            mean_gen_ms=float(num("mean_gen_ms", 0.0)),
            rss_bytes=int(num("rss_bytes")),
            gpu_mem_bytes=int(num("gpu_mem_bytes")),
            load_time_ms=int(num("load_time_ms", ready.load_time_ms)),
            last_seen_ms=int((now - self.last_seen) * 1000),
            warm=self.shown[0],
            engine_stats=self.shown[1],
            supervisor=self.shown[2],
        )


class WorkerRegistry:
    """Workers by routing identity, indexed by what the broker asks per event (see the module docstring)."""

    def __init__(self) -> None:
        self._workers: dict[bytes, WorkerRecord] = {}
        self._free: dict[Optional[str], collections.OrderedDict[bytes, WorkerRecord]] = {}  # per served key, LRU
        self._serving: collections.Counter[Optional[str]] = collections.Counter()  # workers per served key
        self._taking: collections.Counter[Optional[str]] = collections.Counter()  # the same, not draining
        self._by_seen: collections.OrderedDict[bytes, WorkerRecord] = collections.OrderedDict()  # oldest first
        self._retiring: dict[bytes, WorkerRecord] = {}  # draining and holding no lease: to be told to leave
        self._free_seq = itertools.count(1)

    def __len__(self) -> int:
        return len(self._workers)

    def __iter__(self) -> Iterator[WorkerRecord]:
        return iter(list(self._workers.values()))

    def get(self, identity: bytes) -> Optional[WorkerRecord]:
        return self._workers.get(identity)

    def add(self, record: WorkerRecord) -> None:
        self._workers[record.identity] = record
        self._by_seen[record.identity] = record
        for key in record.served_keys:
            self._serving[key] += 1
            if not record.draining:
                self._taking[key] += 1
        self._refresh(record)

    def remove(self, identity: bytes) -> Optional[WorkerRecord]:
        record = self._workers.pop(identity, None)
        if record is None:
            return None
        self._unfree(record)
        self._by_seen.pop(identity, None)
        self._retiring.pop(identity, None)
        for key in record.served_keys:
            _decrement(self._serving, key)
            if not record.draining:
                _decrement(self._taking, key)
        return record

    # ---- liveness ----------------------------------------------------------------------------------

    def touch(self, record: WorkerRecord, now: float) -> None:
        """The worker was heard from (any message proves it alive, even a malformed one)."""
        record.last_seen = now
        if record.identity in self._by_seen:
            self._by_seen.move_to_end(record.identity)

    def silent(self, now: float, dead_after_s: float) -> list[WorkerRecord]:
        """Workers not heard from for more than `dead_after_s`: only those are looked at."""
        found = []
        for record in self._by_seen.values():
            if now - record.last_seen <= dead_after_s:
                break
            found.append(record)
        return found

    # ---- leases and free slots ---------------------------------------------------------------------

    def lease(self, record: WorkerRecord, lease: Lease, job: Job) -> None:
        record.leases[lease] = job
        self._unfree(record)
        self._refresh(record)  # still free (capacity > 1): goes to the back, LRU

    def release(self, record: WorkerRecord, lease: Lease) -> None:
        record.leases.pop(lease, None)
        self._refresh(record)

    def revoke(self, record: WorkerRecord, lease: Lease) -> None:
        """The lease no longer counts for its job, but the slot stays busy until the worker answers."""
        if lease in record.leases:
            record.leases[lease] = None

    def set_capacity(self, record: WorkerRecord, capacity: Optional[int]) -> bool:
        """Apply a HEARTBEAT `capacity` (None: unchanged); True if the worker gained free slots (worth a dispatch)."""
        if capacity is None or capacity == record.advertised:
            return False
        before = record.free_slots
        record.advertised = capacity
        self._refresh(record)
        return record.free_slots > before

    def drain(self, record: WorkerRecord) -> None:
        """Give this worker no new leases (DRAIN_WORKER)."""
        if not record.draining and record.identity in self._workers:
            for key in record.served_keys:
                _decrement(self._taking, key)
        record.draining = True
        self._unfree(record)
        self._refresh(record)

    def drained(self) -> list[WorkerRecord]:
        """Draining workers that hold no lease any more: ready to be told to leave."""
        return list(self._retiring.values())

    def matching(self, *, worker: Optional[str] = None, host: Optional[str] = None) -> list[WorkerRecord]:
        """Workers whose worker_id or name is `worker`, or whose host is `host` (an admin command: a scan)."""
        if worker is not None:
            return [w for w in self._workers.values() if worker in (w.worker_id, w.ready.name)]
        return [w for w in self._workers.values() if host is not None and w.ready.host == host]

    def _refresh(self, record: WorkerRecord) -> None:
        identity = record.identity
        if identity not in self._workers:
            return
        if record.draining:
            if not record.leases:
                self._retiring[identity] = record
            return
        if record.free_slots > 0:
            if record.free_seq == 0:
                record.free_seq = next(self._free_seq)
                for key in record.served_keys:
                    free = self._free.get(key)
                    if free is None:
                        free = self._free[key] = collections.OrderedDict()
                    free[identity] = record
        else:
            self._unfree(record)

    def _unfree(self, record: WorkerRecord) -> None:
        if record.free_seq == 0:
            return
        record.free_seq = 0
        for key in record.served_keys:
            free = self._free.get(key)
            if free is not None:
                free.pop(record.identity, None)
                if not free:
                    del self._free[key]

    def free_workers(self) -> list[WorkerRecord]:
        """Workers with a free slot, least recently used first (a scan: for views and tests, not dispatch)."""
        return sorted((w for w in self._workers.values() if w.free_seq), key=lambda w: w.free_seq)

    def first_free(self, key: Optional[str]) -> Optional[WorkerRecord]:
        """The least recently used worker with a free slot that serves `key`, or None."""
        free = self._free.get(key)
        return next(iter(free.values())) if free else None

    def serves_key(self, key: Optional[str]) -> bool:
        return key in self._serving

    def takes_key(self, key: Optional[str]) -> bool:
        """True if a connected worker that still takes new leases (not draining) serves `key`."""
        return key in self._taking


def _decrement(counter: collections.Counter[Optional[str]], key: Optional[str]) -> None:
    left = counter[key] - 1
    if left > 0:
        counter[key] = left
    else:
        del counter[key]
