"""Connected workers: who they are, what they serve, their leases, liveness and free slots (LRU)."""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Iterator, Optional

from tts_protocol.messages import Ready, WorkerView

from tts_broker.jobs import Job

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
    jobs_done: int = 0
    jobs_failed: int = 0
    key: Optional[str] = None  # ZAP User-Id ("worker:NAME") of its connection under CURVE
    draining: bool = False  # DRAIN_WORKER: no new leases; DISCONNECT once its leases are answered
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
        engine, model = self.ready.engine, self.ready.model
        return (None, engine, f"{engine}:{model}") if model else (None, engine)

    def serves(self, key: Optional[str]) -> bool:
        return key in self.served_keys

    def held_jobs(self) -> list[Job]:
        """Jobs whose current lease this worker holds (revoked leases excluded)."""
        return [job for job in self.leases.values() if job is not None]

    def update_stats(self, stats: dict[str, Any]) -> None:
        self.stats = stats
        warm = stats.get("warm")
        if isinstance(warm, list):
            self.warm = frozenset(str(name) for name in warm[:256])

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
            warm=sorted(self.warm),
            engine_stats=engine if isinstance(engine := stats.get("engine"), dict) else {},
            supervisor=sup if isinstance(sup := stats.get("supervisor"), dict) else {},
        )


class WorkerRegistry:
    """Workers by routing identity, with the free ones kept least-recently-used first."""

    def __init__(self) -> None:
        self._workers: dict[bytes, WorkerRecord] = {}
        self._free: collections.OrderedDict[bytes, WorkerRecord] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._workers)

    def __iter__(self) -> Iterator[WorkerRecord]:
        return iter(list(self._workers.values()))

    def get(self, identity: bytes) -> Optional[WorkerRecord]:
        return self._workers.get(identity)

    def add(self, record: WorkerRecord) -> None:
        self._workers[record.identity] = record
        self._refresh(record)

    def remove(self, identity: bytes) -> Optional[WorkerRecord]:
        self._free.pop(identity, None)
        return self._workers.pop(identity, None)

    def lease(self, record: WorkerRecord, lease: Lease, job: Job) -> None:
        record.leases[lease] = job
        self._free.pop(record.identity, None)
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
        record.draining = True
        self._free.pop(record.identity, None)

    def drained(self) -> list[WorkerRecord]:
        """Draining workers that hold no lease any more: ready to be told to leave."""
        return [w for w in self._workers.values() if w.draining and not w.leases]

    def matching(self, *, worker: Optional[str] = None, host: Optional[str] = None) -> list[WorkerRecord]:
        """Workers whose worker_id or name is `worker`, or whose host is `host`."""
        if worker is not None:
            return [w for w in self._workers.values() if worker in (w.worker_id, w.ready.name)]
        return [w for w in self._workers.values() if host is not None and w.ready.host == host]

    def _refresh(self, record: WorkerRecord) -> None:
        if record.free_slots > 0 and record.identity in self._workers and not record.draining:
            if record.identity not in self._free:
                self._free[record.identity] = record
        else:
            self._free.pop(record.identity, None)

    def free_workers(self) -> list[WorkerRecord]:
        """Workers with a free slot, least recently used first."""
        return list(self._free.values())

    def serves_key(self, key: Optional[str]) -> bool:
        return any(w.serves(key) for w in self._workers.values())
