"""Check that jobs accepted before a stack is taken down are answered once it is up again: nothing lost.

Run by scripts/test-images.sh with the host's venv (tts_client):
    python scripts/images/jobs_survive.py --broker tcp://127.0.0.1:PORT --jobs 8 -- 'docker-compose ... down' \
        'docker-compose ... up -d'
It submits the jobs (each waits for the broker's ACCEPTED, which is journaled), runs each command in turn while
the jobs are in flight, then waits for every result; the client resubmits by job id when it sees the new broker.
Exit 0 when every job came back once with audio; otherwise one line per failure and exit 1.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import uuid

from tts_client import TtsClient

LINE = "Every job that the broker accepted before the stack went down is still answered after it comes back. "


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", required=True)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--timeout-s", type=float, default=300)
    parser.add_argument("commands", nargs="+", help="shell commands run in turn while the jobs are in flight")
    args = parser.parse_args()
    run = uuid.uuid4().hex[:8]
    failures: list[str] = []
    with TtsClient(args.broker) as tts:
        jobs = [tts.submit(LINE * 3, job_id=f"survive-{run}-{i}", timeout_s=args.timeout_s)
                for i in range(args.jobs)]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and tts.broker_status().jobs.get("queued", 0) + sum(
                w.busy for w in tts.broker_status().workers) < args.jobs and not any(j.done() for j in jobs):
            time.sleep(0.05)
        for command in args.commands:
            started = time.monotonic()
            done = subprocess.run(command, shell=True, capture_output=True, text=True, check=False)
            print(f"jobs_survive: `{command}` exit {done.returncode} in {time.monotonic() - started:.1f} s "
                  f"({sum(j.done() for j in jobs)}/{args.jobs} jobs answered so far)")
            if done.returncode != 0:
                failures.append(f"`{command}` failed: {done.stderr.strip()[-300:]}")
        answered = 0
        for job in jobs:
            try:
                result = job.result()
            except Exception as e:  # noqa: BLE001 - every failure is reported, one line each
                failures.append(f"{job.job_id}: {type(e).__name__}: {e}")
                continue
            answered += 1
            if result.duration_s < 1.0:
                failures.append(f"{job.job_id}: only {result.duration_s:.2f} s of audio")
    print(f"jobs_survive: {answered}/{args.jobs} jobs answered after the restart")
    for failure in failures:
        print(f"jobs_survive: FAIL {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
