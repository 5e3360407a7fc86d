"""What one small commit through the SQLite journal costs, witnesses included (issue 19 item 18).

    python benchmarks/bench_journal_commit.py [--commits 2000] [--rounds 2] [--sync normal]

Each round opens a fresh journal in a temporary folder (with the state dir's broker.lock as its second
witness, where this version has one), records one small job and flushes, `--commits` times, and prints the
mean and median microseconds per flush; then the witnesses' part alone (encode a record, pwrite it to both
files), where this version has them. Run it with another checkout's packages first on PYTHONPATH to
compare versions in the same session.
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import tempfile
import time
from pathlib import Path

from tts_protocol.messages import Submit

from tts_broker.jobs import Job
from tts_broker.journal import Journal


def one_round(commits: int, sync: str) -> list[float]:
    with tempfile.TemporaryDirectory(prefix="bench-journal-") as tmp:
        state = Path(tmp)
        options: dict[str, object] = {"synchronous": sync}
        if "lock_file" in inspect.signature(Journal).parameters:
            options["lock_file"] = state / "broker.lock"
        journal = Journal(state / "journal.sqlite3", **options)  # type: ignore[arg-type]
        took: list[float] = []
        try:
            for i in range(commits):
                request = Submit(job_id=f"job-{i}", text="a short line")
                journal.record(Job(request=request, priority=request.priority, model=None,
                                   accepted_at=time.monotonic(), accepted_wall=time.time()), new=True)
                start = time.perf_counter()
                journal.flush()
                took.append(time.perf_counter() - start)
        finally:
            journal.close()
        return took


def witness_write_us(writes: int) -> float:
    """Microseconds for one Witnesses.write (two files), or nan in a version without them."""
    try:
        from tts_broker.journal_witness import Mark, Witnesses, WitnessFile
    except ImportError:
        return float("nan")
    with tempfile.TemporaryDirectory(prefix="bench-witness-") as tmp:
        witnesses = Witnesses([WitnessFile(Path(tmp) / "journal.sqlite3.seq"),
                               WitnessFile(Path(tmp) / "broker.lock", offset=32)])
        try:
            start = time.perf_counter()
            for seq in range(writes):
                witnesses.write(Mark("0123456789abcdef", seq))
            return (time.perf_counter() - start) / writes * 1e6
        finally:
            witnesses.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sync", choices=("normal", "full"), default="normal")
    args = parser.parse_args()
    witnesses = "side file + broker.lock" if "lock_file" in inspect.signature(Journal).parameters else "side file"
    print(f"journal {Journal.__module__} ({inspect.getsourcefile(Journal)}), witnesses: {witnesses}")
    for r in range(args.rounds):
        took = one_round(args.commits, args.sync)
        print(f"round {r + 1}: {args.commits} commits, synchronous={args.sync}: "
              f"mean {statistics.fmean(took) * 1e6:.1f} us, median {statistics.median(took) * 1e6:.1f} us per commit")
    print(f"witnesses alone: {witness_write_us(20 * args.commits):.1f} us per write (record + 2 pwrites)")


if __name__ == "__main__":
    main()
