"""What `--http` costs the broker loop: the lifecycle driven in-process with and without the MetricsHook.

No sockets, so the figures are not shaken by other processes on a shared machine: N jobs go through submit,
dispatch and complete on 4 workers, alternating runs with and without the hook (best of R each), then the
time one snapshot takes with many retained jobs (the loop takes one every 0.5 s). The ratio is against the
bare state machine, which is far faster than the broker with its sockets; the cost per job is the figure
to compare with bench_broker.py's jobs per second. bench_broker.py's `--http` row is the end-to-end one.

    python benchmarks/bench_metrics.py [--jobs 20000] [--rounds 5] [--retained 100000]
"""

from __future__ import annotations

import argparse
import time

from tts_protocol.messages import Ready, Submit, WorkerResult

from tts_broker.core import BrokerCore
from tts_broker.metrics import MetricsHook
from tts_broker.settings import BrokerSettings
from tts_broker.status import BrokerInfo

PCM = b"\x00\x01" * 512


def run(jobs: int, with_hook: bool, retained: int = 100_000) -> tuple[float, BrokerCore, MetricsHook]:
    hook = MetricsHook()
    settings = BrokerSettings(_env_file=None, max_queue=jobs + 1, max_retained_jobs=retained,  # type: ignore[call-arg]
                              max_retained_bytes=1 << 40, result_ttl_s=3600)
    life = BrokerCore(settings, [hook] if with_hook else [])
    hook.attach(life, BrokerInfo("b-bench", "0", 0.0))
    ids = [f"w-{i:016x}".encode() for i in range(4)]
    for identity in ids:
        life.life.worker_ready(identity, Ready(worker_id=identity.decode(), engine="tone", model="v1", capacity=4), 0.0)
    requests = [Submit(job_id=f"j{i}", text="hello") for i in range(jobs)]
    started = time.perf_counter()
    for req in requests:
        now = time.perf_counter()  # the real clock, so snapshots come every 0.5 s as in the broker
        life.life.submit(b"client", req, now, now)
        life.dispatch(now)
        for worker in life.workers:
            for job_id, attempt in list(worker.leases):
                life.life.complete(worker, WorkerResult(job_id=job_id, attempt=attempt, sample_rate=16000,
                                                   gen_time_ms=5), PCM, now)
        life.outbox.now.clear()
        life.outbox.later.clear()
        if with_hook:
            hook.tick(now)  # the broker's timer calls this every 50 ms; it snapshots every 0.5 s
    return time.perf_counter() - started, life, hook


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--retained", type=int, default=100_000)
    args = parser.parse_args()
    off, on = [], []
    for _ in range(args.rounds):
        off.append(run(args.jobs, False)[0])
        on.append(run(args.jobs, True)[0])
    best_off, best_on = min(off), min(on)
    print(f"lifecycle, {args.jobs} jobs: without hook {args.jobs / best_off:,.0f} jobs/s, "
          f"with MetricsHook {args.jobs / best_on:,.0f} jobs/s")
    added_us = (best_on - best_off) / args.jobs * 1e6
    print(f"throughput ratio with / without the hook: {best_off / best_on:.2f}; the hook adds {added_us:.1f} us "
          f"a job (target < 10 us: the socket broker spends a few hundred us a job, bench_broker.py)")
    _, life, hook = run(args.retained, True, retained=args.retained)
    samples = []
    for i in range(20):
        started = time.perf_counter()
        hook._next_snapshot = 0.0
        hook.tick(1e6 + i)
        samples.append(time.perf_counter() - started)
    print(f"one snapshot with {life.jobs.retained_count:,} retained jobs: {min(samples) * 1000:.2f} ms "
          f"(every 0.5 s: {min(samples) / 0.5 * 100:.2f}% of the loop; target < 2%)")


if __name__ == "__main__":
    main()
