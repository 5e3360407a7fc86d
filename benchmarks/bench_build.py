"""`tts build` (loudness, true peak, trim, word timings, speech check) against `tts batch` on the same workers.

Starts a broker (no journal, no result cache) and Piper workers on random loopback ports, then for each size
runs `tts batch` and `tts build` over the same number of distinct lines (fresh texts for each run, so neither
is served from the other's jobs) and prints:
  - lines/s of each and the ratio build/batch (the goal: >= 0.8),
  - the cost of each stage per line (from the build report: synthesis wall time per job, trim, loudness,
    check, align, write; the post-processing stages run in a process pool beside synthesis),
  - the peak RSS of the `tts build` process tree, to show how memory grows with the manifest.
Figures depend on the machine and on what else runs on it: with the workers and the check pool on the same
few cores they compete for CPU, which a fleet (workers on other machines) does not.

    .venv/bin/python benchmarks/bench_build.py [--sizes 30,60] [--workers 2] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from benchkit import ROOT, Stack, wait_workers

BIN = Path(sys.executable).parent
WORDS = ["harbor", "lantern", "village", "captain", "forest", "river", "market", "winter", "garden", "signal"]
VERBS = ["found", "opened", "carried", "painted", "watched", "cleaned"]
SALTS = ["today", "tonight", "tomorrow", "again", "at dawn", "at noon"]


def text(i: int, salt: str) -> str:
    return (f"The {WORDS[i % 10]} {VERBS[(i // 10) % 6]} the {WORDS[(i * 7 + 3) % 10]} "
            f"near the {WORDS[(i * 3 + 1) % 10]} {salt}.")


def write_lines(path: Path, n: int, salt: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(n):
            handle.write(json.dumps({"id": f"l{i}", "speaker": "default", "text": text(i, salt)}) + "\n")


def timed(cmd: list[str], log: Path) -> tuple[float, int, int]:
    """Seconds, exit code and peak RSS (bytes, the process and its children) of one command."""
    started = time.perf_counter()
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=str(ROOT))
        peak = 0
        parent = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                rss = parent.memory_info().rss + sum(c.memory_info().rss for c in parent.children(recursive=True))
                peak = max(peak, rss)
            except psutil.Error:
                pass
            time.sleep(0.1)
    return time.perf_counter() - started, proc.returncode, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="30,60", help="Manifest sizes (comma-separated).")
    parser.add_argument("--workers", type=int, default=2, help="Piper worker processes.")
    parser.add_argument("--jobs", type=int, default=2, help="tts build --jobs (post-processing processes).")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-build-") as tmp_name:
        tmp = Path(tmp_name)
        stack = Stack(tmp)
        try:
            frontend = stack.start_broker(log_level="WARNING", timeout_s=30)["frontend"]
            stack.start_worker("piper", concurrency=args.workers)
            from tts_client import TtsClient

            with TtsClient(frontend) as client:
                wait_workers(client, args.workers, timeout_s=120, match=lambda w: "speakers" in w.engine_stats,
                             every_s=0.2)
                client.synthesize("Warm up.", model="piper")
            tts = str(BIN / "tts")
            print(f"tts build vs tts batch: {args.workers} Piper workers, build --jobs {args.jobs}, "
                  f"{os.cpu_count()} CPUs on this machine")
            for k, n in enumerate(sizes):
                batch_in, build_in = tmp / f"batch-{n}.jsonl", tmp / f"build-{n}.jsonl"
                when = SALTS[k % len(SALTS)]  # words, not digits: fresh texts the recogniser can spell
                write_lines(batch_in, n, f"for the batch {when}")
                write_lines(build_in, n, f"for the build {when}")
                t_batch, rc_batch, _ = timed([tts, "--broker", frontend, "batch", str(batch_in), "--output-dir",
                                              str(tmp / f"batch-out-{n}"), "--model", "piper"], tmp / "batch.log")
                out = tmp / f"build-out-{n}"
                t_build, rc_build, rss = timed([tts, "--broker", frontend, "build", str(build_in), "-o", str(out),
                                                "--model", "piper", "--jobs", str(args.jobs)], tmp / "build.log")
                report = json.loads((out / "build-report.json").read_text())
                summary = report["summary"]
                stages = ", ".join(f"{k} {v:.0f}" for k, v in summary["stage_ms_per_line"].items())
                failed = summary["failed"]
                print(f"{n:5d} lines: batch {n / t_batch:5.2f} lines/s (exit {rc_batch}), build {n / t_build:5.2f} "
                      f"lines/s (exit {rc_build}, {failed} failed the check): ratio {t_batch / t_build:.2f}; "
                      f"build peak RSS {rss / 2**20:.0f} MiB")
                print(f"       ms per line: {stages}")
        finally:
            stack.close()


if __name__ == "__main__":
    main()
