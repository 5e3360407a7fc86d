"""Failover: time from kill -9 of the active broker to the first result from the new active, and what the
PostgreSQL journal costs in throughput next to the SQLite journal and no journal, in the same run.

Everything is real: a throwaway PostgreSQL (tests/pg_throwaway.py: installed from Debian's packages when
missing, run as `postgres` on a free loopback port), `tts-broker` processes on ipc:// endpoints, one
`tts-worker` supervisor with tone workers (the test engine: a short tone per job), and the Python client.

Failover rounds: brokers A (active) and B (standby) on one journal database; the client and the workers hold
the endpoint list. Each round keeps jobs flowing, kills the active with SIGKILL, submits a probe job at
that instant and records (1) when the standby's ready file appears (it leads and has bound its ports) and
(2) when the probe's result arrives, which is what a caller sees: the client notices the silence
(3 missed pings), moves to the next endpoint and resubmits. The killed broker is started again as the new
standby for the next round.

Throughput: one broker, 2 tone workers, N jobs submitted at once, for each journal; jobs/s and the ratio to
no journal.

    python benchmarks/bench_failover.py [--kills 10] [--jobs 2000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

from benchkit import ROOT, Processes, broker_command, wait_until, worker_command

sys.path.insert(0, str(ROOT / "tests"))

from tts_client import TtsClient  # noqa: E402

from pg_throwaway import ThrowawayPostgres  # noqa: E402


def wait(what: str, condition: Callable[[], object], timeout_s: float) -> None:
    wait_until(what, condition, timeout_s, every_s=0.005)  # the takeover times are read off these polls


class Broker:
    def __init__(self, name: str, procs: Processes, tmp: Path, extra: list[str]) -> None:
        self.name, self.procs, self.tmp, self.extra = name, procs, tmp, extra
        self.frontend, self.backend = f"ipc://{tmp}/{name}-front", f"ipc://{tmp}/{name}-back"
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.starts = 0

    @property
    def ready(self) -> Path:
        return self.tmp / f"{self.name}-ready-{self.starts}.json"

    def start(self) -> Broker:
        self.starts += 1
        args = broker_command(self.ready, self.tmp / f"{self.name}-state", frontend=self.frontend,
                              backend=self.backend, journal=True, log_level="INFO", extra=self.extra)
        self.proc = self.procs.spawn(args, log=self.tmp / f"{self.name}-{self.starts}.log")
        return self

    def standing_by(self) -> bool:
        log = self.tmp / f"{self.name}-{self.starts}.log"
        return "waiting to take over" in log.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc is not None:
            self.procs.kill(self.proc)


def start_workers(procs: Processes, backends: str, count: int) -> subprocess.Popen[bytes]:
    return procs.spawn(worker_command(backends, "tone", concurrency=count))


def failover_rounds(pg: ThrowawayPostgres, kills: int) -> tuple[list[float], list[float]]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-failover-"))
    procs = Processes(tmp / "workers.log", cwd=ROOT)
    url = pg.url(pg.new_database())
    brokers = [Broker("a", procs, tmp, ["--journal-url", url]), Broker("b", procs, tmp, ["--journal-url", url])]
    brokers[0].start()
    wait("broker a active", brokers[0].ready.exists, 30)
    brokers[1].start()
    wait("broker b standing by", brokers[1].standing_by, 30)
    start_workers(procs, ",".join(b.backend for b in brokers), 2)
    client = TtsClient(",".join(b.frontend for b in brokers), timeout_s=120)
    took_over: list[float] = []
    first_result: list[float] = []
    try:
        client.synthesize("warm up.")
        for round_no in range(kills):
            active = next(b for b in brokers if b.ready.exists())
            standby = next(b for b in brokers if b is not active)
            flowing = [client.submit(f"round {round_no} job {i}.") for i in range(50)]
            wait("jobs flowing", lambda: sum(h.done() for h in flowing) >= 10, 60)  # noqa: B023
            killed_at = time.monotonic()
            active.kill()
            probe = client.submit(f"probe {round_no}.")
            wait("standby active", standby.ready.exists, 30)
            took_over.append(time.monotonic() - killed_at)
            probe.result()
            first_result.append(time.monotonic() - killed_at)
            for handle in flowing:
                handle.result()
            active.start()  # back as the standby of the next round
            wait("the killed broker back as standby", active.standing_by, 30)
            print(f"  kill {round_no + 1}: standby active after {took_over[-1]:.2f} s, first result after "
                  f"{first_result[-1]:.2f} s", flush=True)
    finally:
        client.close()
        procs.close(grace_s=0)
    return took_over, first_result


def throughput(pg: ThrowawayPostgres, journal: str, jobs: int) -> float:
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-journal-{journal}-"))
    extra = {"postgresql": ["--journal-url", pg.url(pg.new_database())], "sqlite": [],
             "none": ["--no-journal"]}[journal]
    procs = Processes(tmp / "workers.log", cwd=ROOT)
    broker = Broker("solo", procs, tmp, extra).start()
    wait(f"broker ({journal})", broker.ready.exists, 30)
    start_workers(procs, broker.backend, 2)
    client = TtsClient(broker.frontend, timeout_s=300)
    try:
        wait("2 workers", lambda: len(client.broker_status().workers) >= 2, 60)
        client.synthesize("warm up.")
        started = time.monotonic()
        handles = [client.submit(f"throughput job {i}.") for i in range(jobs)]
        for handle in handles:
            handle.result()
        return jobs / (time.monotonic() - started)
    finally:
        client.close()
        procs.close(grace_s=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=2000)
    args = parser.parse_args()
    pg = ThrowawayPostgres().start()
    try:
        print(f"failover: {args.kills} kills of the active broker (PostgreSQL journal, 2 tone workers)")
        took_over, first = failover_rounds(pg, args.kills)
        print(f"standby active after kill -9: p50 {statistics.median(took_over):.2f} s, max {max(took_over):.2f} s")
        print(f"first result from the new active: p50 {statistics.median(first):.2f} s, max {max(first):.2f} s")
        print(f"throughput: {args.jobs} tone jobs, 1 broker, 2 workers")
        rates = {journal: throughput(pg, journal, args.jobs) for journal in ("none", "sqlite", "postgresql")}
        for journal, rate in rates.items():
            print(f"  {journal:<10} {rate:7.0f} jobs/s  ({rate / rates['none']:.2f} x no journal)")
        print(json.dumps({"took_over_s": took_over, "first_result_s": first, "jobs_per_s": rates}))
    finally:
        pg.stop()


if __name__ == "__main__":
    main()
