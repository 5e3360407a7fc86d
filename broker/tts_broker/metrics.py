"""Prometheus metrics and the snapshot the HTTP thread serves, kept by a lifecycle hook.

The HTTP thread never reads the lifecycle. The broker loop counts events (a job accepted, finished,
retried; a generation time) in plain dicts, and about every half second publishes a Snapshot: an immutable
object holding copies of those counts and histograms, the levels (queue depth, oldest job's age, workers by
state, worker memory, cache and journal figures), the status document and the dashboard's series. The HTTP
thread picks it up with one attribute read; a prometheus-client collector turns it into metric families at
scrape time, so a scrape is one consistent moment, at most half a second old.

Metric names used for autoscaling (KEDA, the operations issue) are fixed: tts_queue_depth{model,priority},
tts_queue_oldest_age_seconds{model}, tts_workers{model,state}, tts_jobs_total{model,state}.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import logging
import os
import time
from typing import Any, Iterable, Iterator, Optional

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from tts_protocol import routing
from tts_protocol.constants import JobState
from tts_protocol.messages import WorkerResult
from tts_protocol.views import status_document

from tts_broker.dashrows import job_row
from tts_broker.hooks import Hook
from tts_broker.jobs import Job
from tts_broker.metrics_labels import RoutingLabels
from tts_broker.status import BrokerInfo, BrokerState, status_view
from tts_broker.workers import WorkerRecord

log = logging.getLogger(__name__)

SNAPSHOT_EVERY_S = 0.5
SERIES_EVERY_S = 1.0
SERIES_POINTS = 300  # five minutes of one-second points for the dashboard's charts
LATENCY_POINTS = 5  # the latency chart's p50/p95 are over the jobs of the last five points
_MAX_WINDOW = 100_000
RECENT_JOBS = 50
RECENT_FAILURES = 20
_GEN_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


def model_label(key: Optional[str]) -> str:
    """A job's routing key as a label value; jobs that name no model (and no broker default) are `any`."""
    return key if key else "any"


def worker_model(worker: WorkerRecord) -> str:
    return routing.worker_key(worker.ready.engine, worker.ready.model)


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerFigures:
    """One worker's levels at snapshot time."""

    worker_id: str
    model: str
    engine: str
    state: str
    busy: int
    capacity: int
    jobs_done: int
    jobs_failed: int
    rss_bytes: int
    cpu_percent: float
    gpu_mem_bytes: int
    real_time_factor: Optional[float]


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    """What the broker looked like at `taken_at` (wall clock); never changed after it is published.

    `status` is the /api/status document (tts_protocol.views.status_document), `jobs` and `failures` are job
    views (newest first), `series` the dashboard's one-second points, the rest feed the gauges.
    """

    taken_at: float
    status: dict[str, Any]
    jobs: list[dict[str, Any]]
    failures: list[dict[str, Any]]
    series: list[dict[str, Any]]
    queue_depth: dict[tuple[str, str], int]  # (model, priority) -> jobs
    queue_oldest_age_s: dict[str, float]  # model -> seconds
    workers: tuple[WorkerFigures, ...]
    in_flight: int
    cache: Optional[dict[str, Any]]
    journal_commits: Optional[int]
    journal_bytes: Optional[int]
    jobs_total: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)
    retries_total: dict[str, int] = dataclasses.field(default_factory=dict)
    dead_letters_total: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)
    generation: dict[tuple[str, str], tuple[tuple[int, ...], float]] = dataclasses.field(default_factory=dict)
    latency: dict[str, tuple[tuple[int, ...], float]] = dataclasses.field(default_factory=dict)
    taken_monotonic: float = 0.0  # time.monotonic() when taken, whatever clock drives the loop (/healthz)

    def page(self) -> dict[str, Any]:
        """Everything the dashboard draws, as one JSON document."""
        return {"taken_at": self.taken_at, "status": self.status, "jobs": self.jobs, "failures": self.failures,
                "series": self.series}


EMPTY = Snapshot(taken_at=0.0, status={}, jobs=[], failures=[], series=[], queue_depth={}, queue_oldest_age_s={},
                 workers=(), in_flight=0, cache=None, journal_commits=None, journal_bytes=None)


class _Histogram:
    """Bucket counts of one series, kept by the broker loop alone (no lock: the HTTP thread sees copies)."""

    __slots__ = ("counts", "total", "n")

    def __init__(self) -> None:
        self.counts = [0] * (len(_GEN_BUCKETS_S) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(_GEN_BUCKETS_S, value)] += 1
        self.total += value
        self.n += 1

    def frozen(self) -> tuple[tuple[int, ...], float]:
        return tuple(self.counts), self.total


class MetricsHook(Hook):
    """Counts lifecycle events and publishes Snapshots, which a prometheus-client collector exposes.

    Events are counted in plain dicts by the broker loop (a few hundred nanoseconds a job; prometheus-client's
    own Counter and Histogram objects lock on every change and cost several times more, benchmarks/
    bench_metrics.py); the HTTP thread reads only the copies in the latest snapshot, so a scrape is consistent.
    """

    def __init__(self, *, pinned_models: Iterable[str] = ()) -> None:
        #: Which routing keys become `model` labels (metrics_labels.py): a client cannot mint series.
        self.labels = RoutingLabels(pinned_models)
        self._now = 0.0  # the clock at the last tick (events carry no time)
        self.registry = CollectorRegistry(auto_describe=True)
        self.snapshot: Snapshot = EMPTY
        self._life: Optional[BrokerState] = None
        self._info: Optional[BrokerInfo] = None
        self._next_snapshot = 0.0
        self._next_point = 0.0
        self._series: collections.deque[dict[str, Any]] = collections.deque(maxlen=SERIES_POINTS)
        self._window: list[tuple[float, float]] = []  # (total ms, generation ms) of jobs done since the last point
        self._windows: collections.deque[list[tuple[float, float]]] = collections.deque(maxlen=LATENCY_POINTS)
        self._rtf: dict[str, tuple[float, float]] = {}  # worker_id -> (generation s, audio s)
        self._jobs: collections.Counter[tuple[str, str]] = collections.Counter()  # (model, state)
        self._retries: collections.Counter[str] = collections.Counter()  # model
        self._dead: collections.Counter[tuple[str, str]] = collections.Counter()  # (model, code)
        self._gen: dict[tuple[str, str], _Histogram] = {}  # (worker_id, model)
        self._latency: dict[str, _Histogram] = {}  # model
        self.registry.register(_SnapshotCollector(self))

    def attach(self, life: BrokerState, info: BrokerInfo) -> None:
        """Give the hook the state it snapshots; the server calls this once, after building the core."""
        self._life, self._info = life, info
        if life.settings.default_model:  # jobs that name no model go there: a key operators query
            self.labels.pinned |= {life.settings.default_model}

    # ---- events, from the broker loop ----------------------------------------------------------

    def recorded(self, job: Job, *, new: bool) -> None:
        state = job.state
        if new and state is JobState.QUEUED:
            self._jobs[(self._label(job.model), "queued")] += 1
        elif state is JobState.RUNNING:
            if job.attempt > 1:
                self._retries[self._label(job.model)] += 1
        elif state.finished:
            model = self._label(job.model)
            if new:  # answered from the result cache: accepted and done at once
                self._jobs[(model, "queued")] += 1
            self._jobs[(model, state.value)] += 1
            if state is JobState.FAILED:
                self._dead[(model, job.error.code if job.error else "unknown")] += 1

    def completed(self, job: Job, worker: WorkerRecord, body: WorkerResult) -> None:
        gen_s = body.gen_time_ms / 1000
        labels = (worker.worker_id, worker_model(worker))
        histogram = self._gen.get(labels)
        if histogram is None:
            histogram = self._gen[labels] = _Histogram()
        histogram.observe(gen_s)
        model = self._label(job.model)
        latency = self._latency.get(model)
        if latency is None:
            latency = self._latency[model] = _Histogram()
        total_s = (job.finished_at or job.accepted_at) - job.accepted_at
        latency.observe(total_s)
        if len(self._window) < _MAX_WINDOW:
            self._window.append((total_s * 1000, float(body.gen_time_ms)))
        audio_s = job.audio_bytes / (2 * max(body.channels, 1) * body.sample_rate)
        spent, spoken = self._rtf.get(worker.worker_id, (0.0, 0.0))
        self._rtf[worker.worker_id] = (spent + gen_s, spoken + audio_s)

    def tick(self, now: float) -> None:
        self._now = now
        if now >= self._next_snapshot and self._life is not None:
            self._next_snapshot = now + SNAPSHOT_EVERY_S
            try:
                self.snapshot = self._take(now)
            except Exception:  # metrics must never take the broker down
                log.exception("could not take a metrics snapshot; keeping the previous one")

    # ---- the snapshot ----------------------------------------------------------------------------

    def _take(self, now: float) -> Snapshot:
        life, info = self._life, self._info
        assert life is not None and info is not None
        status = status_document(status_view(life, info, now))
        jobs = life.jobs
        recent = [job_row(job, now) for job in jobs.latest(RECENT_JOBS)]
        failures = [job_row(job, now) for job in jobs.latest(RECENT_FAILURES, JobState.FAILED)]
        depth: dict[tuple[str, str], int] = {}
        oldest: dict[str, float] = {}
        for priority, key, count, oldest_at in life.queue.levels():
            model = self.labels.label(key, life.workers, now)
            depth[(model, priority.value)] = depth.get((model, priority.value), 0) + count
            oldest[model] = max(oldest.get(model, 0.0), now - oldest_at)
        workers = tuple(self._worker_figures(w) for w in life.workers)
        self._forget_gone_workers(workers)
        self._forget_gone_models(now)
        fields = status["jobs"]
        cache = fields.get("cache") if isinstance(fields.get("cache"), dict) else None
        journal_commits = fields.get("journal_commits") if fields.get("journal") else None
        journal_bytes = _file_bytes(fields.get("journal"))
        wall = time.time()
        if now >= self._next_point:
            self._next_point = now + SERIES_EVERY_S
            self._series.append(self._point(wall, now, status, fields))
        return Snapshot(taken_at=wall, status=status, jobs=recent, failures=failures, series=list(self._series),
                        queue_depth=depth, queue_oldest_age_s=oldest, workers=workers,
                        in_flight=int(fields.get("running", 0)), cache=cache, journal_commits=journal_commits,
                        journal_bytes=journal_bytes, jobs_total=dict(self._jobs), retries_total=dict(self._retries),
                        dead_letters_total=dict(self._dead),
                        generation={k: h.frozen() for k, h in self._gen.items()},
                        latency={k: h.frozen() for k, h in self._latency.items()},
                        taken_monotonic=time.monotonic())

    def _point(self, wall: float, now: float, status: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
        self._windows.append(self._window)
        self._window = []
        window = [item for part in self._windows for item in part]
        totals = sorted(t for t, _ in window)
        return {"t": round(wall, 3), "done": fields.get("done", 0), "failed": fields.get("failed", 0),
                "queued": status["queue"].get("depth", 0), "running": fields.get("running", 0),
                "p50_ms": _quantile(totals, 0.5), "p95_ms": _quantile(totals, 0.95),
                "gen_ms": round(sum(g for _, g in window) / len(window), 1) if window else None,
                # acceptance to result less generation: the time a job waited (queue, dispatch, transfer)
                "wait_ms": round(sum(max(t - g, 0.0) for t, g in window) / len(window), 1) if window else None}

    def _worker_figures(self, worker: WorkerRecord) -> WorkerFigures:
        stats = worker.stats
        spent, spoken = self._rtf.get(worker.worker_id, (0.0, 0.0))
        return WorkerFigures(
            worker_id=worker.worker_id, model=worker_model(worker), engine=worker.ready.engine,
            state="busy" if worker.leases else "idle", busy=len(worker.leases), capacity=worker.capacity,
            jobs_done=worker.jobs_done, jobs_failed=worker.jobs_failed, rss_bytes=int(_num(stats, "rss_bytes")),
            cpu_percent=float(_num(stats, "cpu_percent")), gpu_mem_bytes=int(_num(stats, "gpu_mem_bytes")),
            real_time_factor=round(spent / spoken, 4) if spoken > 0 else None,
        )

    def _label(self, key: Optional[str]) -> str:
        life = self._life
        return self.labels.label(key, life.workers if life is not None else None, self._now)

    def _forget_gone_models(self, now: float) -> None:
        """Drop the series of routing keys no worker has served for a while (they were counted as themselves)."""
        assert self._life is not None
        self.labels.refresh(self._life.workers, now)
        kept = self.labels.kept()
        for key in [k for k in self._jobs if k[0] not in kept]:
            del self._jobs[key]
        for model in [m for m in self._retries if m not in kept]:
            del self._retries[model]
        for key in [k for k in self._dead if k[0] not in kept]:
            del self._dead[key]
        for model in [m for m in self._latency if m not in kept]:
            del self._latency[model]

    def _forget_gone_workers(self, workers: tuple[WorkerFigures, ...]) -> None:
        """Drop the histogram series of workers that left, so a scrape lists only connected workers."""
        current = {(w.worker_id, w.model) for w in workers}
        for labels in set(self._gen) - current:
            del self._gen[labels]
        for worker_id in set(self._rtf) - {w.worker_id for w in workers}:
            del self._rtf[worker_id]


class _SnapshotCollector(Collector):
    """Gauges (and per-worker counters) read from the latest snapshot at scrape time, in the HTTP thread."""

    def __init__(self, hook: MetricsHook) -> None:
        self.hook = hook

    def describe(self) -> Iterable[Any]:
        return []  # families vary with the state; nothing to check at registration

    def collect(self) -> Iterator[Any]:
        snap = self.hook.snapshot
        depth = GaugeMetricFamily("tts_queue_depth", "Queued jobs by routing key and priority",
                                  labels=["model", "priority"])
        for (model, priority), count in sorted(snap.queue_depth.items()):
            depth.add_metric([model, priority], count)
        yield depth
        oldest = GaugeMetricFamily("tts_queue_oldest_age_seconds", "Age of the oldest queued job, by routing key",
                                   labels=["model"])
        for model, age in sorted(snap.queue_oldest_age_s.items()):
            oldest.add_metric([model], round(age, 3))
        yield oldest
        by_state: dict[tuple[str, str], int] = collections.Counter((w.model, w.state) for w in snap.workers)
        for w in snap.workers:  # every model a worker serves shows both states, so a query sees zeros too
            for state in ("idle", "busy"):
                by_state.setdefault((w.model, state), 0)
        workers = GaugeMetricFamily("tts_workers", "Connected workers by the model they serve and state",
                                    labels=["model", "state"])
        for (model, state), count in sorted(by_state.items()):
            workers.add_metric([model, state], count)
        yield workers
        jobs = CounterMetricFamily("tts_jobs", "Jobs by the state they reached (queued = accepted)",
                                   labels=["model", "state"])
        for (model, state), count in sorted(snap.jobs_total.items()):
            jobs.add_metric([model, state], count)
        yield jobs
        retries = CounterMetricFamily("tts_job_retries", "Attempts after the first (a job leased again)",
                                      labels=["model"])
        for model, count in sorted(snap.retries_total.items()):
            retries.add_metric([model], count)
        yield retries
        dead = CounterMetricFamily("tts_dead_letters", "Jobs that failed for good, by error code",
                                   labels=["model", "code"])
        for (model, code), count in sorted(snap.dead_letters_total.items()):
            dead.add_metric([model, code], count)
        yield dead
        latency = HistogramMetricFamily("tts_job_latency_seconds", "Acceptance to result, finished jobs",
                                        labels=["model"])
        for model, (counts, total) in sorted(snap.latency.items()):
            latency.add_metric([model], _cumulative(counts), total)
        yield latency
        generation = HistogramMetricFamily("tts_worker_generation_seconds", "Generation time of finished jobs",
                                           labels=["worker_id", "model"])
        for (worker_id, model), (counts, total) in sorted(snap.generation.items()):
            generation.add_metric([worker_id, model], _cumulative(counts), total)
        yield generation
        yield GaugeMetricFamily("tts_jobs_in_flight", "Jobs running on workers", value=snap.in_flight)
        yield from _worker_families(snap.workers)
        if snap.cache is not None:
            yield CounterMetricFamily("tts_cache_hits", "Result cache hits", value=_num(snap.cache, "hits"))
            yield CounterMetricFamily("tts_cache_misses", "Result cache misses", value=_num(snap.cache, "misses"))
            yield GaugeMetricFamily("tts_cache_bytes", "Result cache size", value=_num(snap.cache, "bytes"))
        if snap.journal_commits is not None:
            yield CounterMetricFamily("tts_journal_commits", "Journal group commits", value=snap.journal_commits)
        if snap.journal_bytes is not None:
            yield GaugeMetricFamily("tts_journal_bytes", "Journal file size (with its WAL)", value=snap.journal_bytes)


def _worker_families(workers: tuple[WorkerFigures, ...]) -> Iterator[Any]:
    labels = ["worker_id", "model"]
    state = GaugeMetricFamily("tts_worker_state", "1 for the state each worker is in", labels=[*labels, "state"])
    busy = GaugeMetricFamily("tts_worker_busy_slots", "Leases a worker holds", labels=labels)
    capacity = GaugeMetricFamily("tts_worker_capacity", "Jobs a worker runs at once", labels=labels)
    done = CounterMetricFamily("tts_worker_jobs", "Jobs a worker answered", labels=[*labels, "result"])
    rss = GaugeMetricFamily("tts_worker_rss_bytes", "Resident memory of the worker process", labels=labels)
    cpu = GaugeMetricFamily("tts_worker_cpu_percent", "CPU use of the worker process (100 = one core)",
                            labels=labels)
    gpu = GaugeMetricFamily("tts_worker_gpu_memory_bytes", "CUDA memory the worker holds", labels=labels)
    rtf = GaugeMetricFamily("tts_worker_real_time_factor",
                            "Generation time over audio duration since it connected (below 1: faster than real time)",
                            labels=labels)
    for w in workers:
        ids = [w.worker_id, w.model]
        for name in ("idle", "busy"):
            state.add_metric([*ids, name], 1 if w.state == name else 0)
        busy.add_metric(ids, w.busy)
        capacity.add_metric(ids, w.capacity)
        done.add_metric([*ids, "done"], w.jobs_done)
        done.add_metric([*ids, "failed"], w.jobs_failed)
        rss.add_metric(ids, w.rss_bytes)
        cpu.add_metric(ids, w.cpu_percent)
        gpu.add_metric(ids, w.gpu_mem_bytes)
        if w.real_time_factor is not None:
            rtf.add_metric(ids, w.real_time_factor)
    yield from (state, busy, capacity, done, rss, cpu, gpu, rtf)


def _cumulative(counts: tuple[int, ...]) -> list[tuple[str, float]]:
    """Per-bucket counts as Prometheus's cumulative `le` buckets, ending with +Inf."""
    out, running = [], 0
    for bound, count in zip((*(repr(b) for b in _GEN_BUCKETS_S), "+Inf"), counts, strict=True):
        running += count
        out.append((bound, float(running)))
    return out


def _num(stats: dict[str, Any], key: str) -> float:
    value = stats.get(key, 0)
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def _quantile(ordered: list[float], q: float) -> Optional[float]:
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def _file_bytes(path: Any) -> Optional[int]:
    """The journal's size on disk, the SQLite file plus its write-ahead log."""
    if not isinstance(path, str):
        return None
    total = 0
    for name in (path, path + "-wal"):
        try:
            total += os.stat(name).st_size
        except OSError:
            pass
    return total
