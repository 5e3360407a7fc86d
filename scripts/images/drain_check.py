"""Check that `docker stop` drains a worker container: its job in hand is answered, the rest finish elsewhere.

Run by scripts/test-images.sh with the host's venv (tts_client), against a broker and two worker containers:
    python scripts/images/drain_check.py --broker tcp://127.0.0.1:PORT --container NAME --worker-name NAME
It submits jobs long enough to keep both workers busy, waits until the named worker holds one, runs `docker stop`
on its container (SIGTERM, then the stop timeout), and then requires every job answered exactly once with audio and:
- default (`--stop-timeout-s 60`): the container exited 0 (it left on its own after answering its job in hand) and
  the other worker did the rest;
- `--expect killed` (with `--stop-timeout-s 0`: SIGKILL at once): the killed worker answered nothing, its job in
  hand was requeued and finished by the other worker.
Exit 0 when all held; otherwise one line per failure and exit 1.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import uuid

from tts_client import TtsClient

LINE = ("The lighthouse keeper counted the ships that passed the rocks each night, and wrote their names in a "
        "book that nobody else had ever read. ")


def worker_ids_named(tts: TtsClient, name: str) -> set[str]:
    return {w.worker_id for w in tts.broker_status().workers if w.name == name}


def wait_until_busy(tts: TtsClient, name: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(w.name == name and w.busy > 0 for w in tts.broker_status().workers):
            return
        time.sleep(0.1)
    raise SystemExit(f"drain_check: worker {name} never took a job in {timeout_s:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", required=True)
    parser.add_argument("--container", required=True, help="the worker container to `docker stop`")
    parser.add_argument("--worker-name", required=True, help="its TTS_WORKER_NAME")
    parser.add_argument("--jobs", type=int, default=6)
    parser.add_argument("--stop-timeout-s", type=int, default=60)
    parser.add_argument("--expect", choices=("drained", "killed"), default="drained")
    args = parser.parse_args()

    failures: list[str] = []
    run = uuid.uuid4().hex[:8]
    with TtsClient(args.broker) as tts:
        deadline = time.monotonic() + 120
        while not (stopped_ids := worker_ids_named(tts, args.worker_name)) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not stopped_ids:
            raise SystemExit(f"drain_check: no worker named {args.worker_name} is connected")
        jobs = [tts.submit(LINE * 2, job_id=f"drain-{run}-{i}", timeout_s=300) for i in range(args.jobs)]
        wait_until_busy(tts, args.worker_name, 60)
        stop_started = time.monotonic()
        stop = subprocess.run(["docker", "stop", "-t", str(args.stop_timeout_s), args.container],
                              capture_output=True, text=True, check=False)
        stop_s = time.monotonic() - stop_started
        if stop.returncode != 0:
            failures.append(f"docker stop {args.container}: {stop.stderr.strip()}")
        seen: dict[str, str] = {}
        for job in jobs:
            result = job.result()
            if result.duration_s < 1.0:
                failures.append(f"{job.job_id}: only {result.duration_s:.2f} s of audio")
            if job.job_id in seen:
                failures.append(f"{job.job_id}: answered twice")
            seen[job.job_id] = result.meta.worker_id
        by_stopped = sorted(j for j, w in seen.items() if w in stopped_ids)
        by_others = sorted(j for j, w in seen.items() if w not in stopped_ids)
        print(f"drain_check: {len(seen)}/{args.jobs} jobs answered; {len(by_stopped)} by {args.worker_name} "
              f"(stopped while busy; `docker stop` returned after {stop_s:.1f} s), {len(by_others)} by the other")
    state = subprocess.run(["docker", "inspect", "-f", "{{.State.ExitCode}} {{.State.OOMKilled}}", args.container],
                           capture_output=True, text=True, check=False).stdout.split()
    if len(seen) != args.jobs:
        failures.append(f"{args.jobs - len(seen)} jobs unanswered")
    if args.expect == "drained":
        if state[:1] != ["0"]:
            failures.append(f"{args.container} exited {state} (wanted 0: it should leave on its own after SIGTERM)")
        if not by_stopped:
            failures.append(f"{args.worker_name} answered no job: stopped while holding one, it must finish it")
    else:
        if state[:1] != ["137"]:
            failures.append(f"{args.container} exited {state} (wanted 137: killed)")
        if by_stopped:
            failures.append(f"the killed worker {args.worker_name} answered {by_stopped}")
    if not by_others:
        failures.append("the other worker answered nothing")
    for failure in failures:
        print(f"drain_check: FAIL {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
