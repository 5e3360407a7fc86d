"""The openai-http engine under a burst: adaptive capacity vs fixed capacities 1, 4, 16, 64, same server, same run.

One stack: a tts-broker (no journal, no result cache), the TEST server tests/remote/loaded_speech_server.py
(OpenAI's POST /v1/audio/speech; first audio = base_ms + per_request_ms x requests already in flight, like a
GPU engine with continuous batching; then 4 pieces 20 ms apart), and one `tts-worker --engine openai-http`
per row, started and stopped in turn. Each row submits the same burst of N jobs at once, then, once the burst
is queued, a few high-priority jobs. Figures per row:
- throughput: N jobs / wall time from the first submit to the last result;
- server TTFA p50/p90: time from the request's arrival at the server to its first audio (what the engine's
  users complain about; the target applies to it);
- client latency p50/p90: submit to whole result (includes the wait in the broker's queue);
- high-priority latency p50: what a late urgent job waits (it overtakes the queue in the broker, not in the
  server).

    python benchmarks/bench_remote_engine.py [--jobs 200] [--target-ms 400] [--base-ms 40] [--per-request-ms 15]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from tts_client import TtsClient

ROOT = Path(__file__).resolve().parents[1]
SERVER = ROOT / "tests" / "remote" / "loaded_speech_server.py"
URGENT = 5


def wait_file(path: Path, proc: subprocess.Popen, what: str, timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with code {proc.returncode}")
        try:
            return dict(json.loads(path.read_text()))
        except (FileNotFoundError, json.JSONDecodeError):
            time.sleep(0.05)
    raise SystemExit(f"{what} did not become ready in {timeout_s:.0f}s")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1] if ordered else float("nan")


def http(url: str, method: str = "GET") -> Any:
    with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=10) as response:
        return json.loads(response.read() or b"{}")


class Stack:
    def __init__(self, tmp: Path, args: argparse.Namespace) -> None:
        self.tmp = tmp
        self.log = (tmp / "stack.log").open("ab")
        self.procs: list[subprocess.Popen] = []
        broker = self.spawn([sys.executable, "-m", "tts_broker", "--frontend", "tcp://127.0.0.1:*", "--backend",
                             "tcp://127.0.0.1:*", "--no-journal", "--no-cache", "--state-dir", str(tmp / "state"),
                             "--log-level", "warning", "--ready-file", str(tmp / "broker.json")])
        info = wait_file(tmp / "broker.json", broker, "broker")
        self.frontend, self.backend = info["frontend"], info["backend"]
        server = self.spawn([sys.executable, str(SERVER), "--ready-file", str(tmp / "server.json"),
                             "--base-ms", str(args.base_ms), "--per-request-ms", str(args.per_request_ms)])
        self.server = wait_file(tmp / "server.json", server, "speech server")["url"]

    def spawn(self, args: list[str]) -> subprocess.Popen:
        proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def worker(self, target_ms: float, low: int, high: int) -> subprocess.Popen:
        opts = {"url": f"{self.server}/v1", "model": "bench", "ttfa_target_ms": target_ms,
                "min_concurrency": low, "max_concurrency": high}
        args = [sys.executable, "-m", "tts_worker", "--broker", self.backend, "--engine", "openai-http",
                "--log-level", "WARNING"]
        for key, value in opts.items():
            args += ["--engine-opt", f"{key}={value}"]
        return self.spawn(args)

    def stop(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def close(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)


def run_row(stack: Stack, client: TtsClient, args: argparse.Namespace, low: int, high: int) -> dict[str, float]:
    worker = stack.worker(args.target_ms, low, high)
    deadline = time.monotonic() + 60
    while not client.broker_status(timeout_s=5).workers:
        if time.monotonic() > deadline or worker.poll() is not None:
            raise SystemExit("the openai-http worker did not register; see the stack log")
        time.sleep(0.05)
    http(f"{stack.server}/stats/reset", "POST")
    started = time.monotonic()
    handles = [client.submit(f"Burst line {i}. Some words to say.", speaker=f"voice{i % 4}")
               for i in range(args.jobs)]
    urgent = [client.submit(f"Urgent line {i}.", speaker="voice0", priority="high") for i in range(URGENT)]
    latency = [float(handle.result().meta.total_time_ms) for handle in handles]  # the broker's submit -> result
    elapsed = time.monotonic() - started
    urgent_latency = [float(handle.result().meta.total_time_ms) for handle in urgent]
    ttfa = http(f"{stack.server}/stats")["ttfa_ms"]
    stack.stop(worker)
    while client.broker_status(timeout_s=5).workers:
        time.sleep(0.05)
    return {"rate": args.jobs / elapsed, "ttfa50": pct(ttfa, 50), "ttfa90": pct(ttfa, 90),
            "lat50": pct(latency, 50), "lat90": pct(latency, 90), "urgent50": pct(urgent_latency, 50)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--target-ms", type=float, default=400.0)
    parser.add_argument("--base-ms", type=float, default=40.0)
    parser.add_argument("--per-request-ms", type=float, default=15.0)
    parser.add_argument("--max", type=int, default=64, help="the adaptive row's max_concurrency")
    args = parser.parse_args()
    rows = [("adaptive", 1, args.max), ("fixed 1", 1, 1), ("fixed 4", 4, 4), ("fixed 16", 16, 16),
            ("fixed 64", 64, 64)]
    with tempfile.TemporaryDirectory(prefix="bench-remote-") as tmp:
        stack = Stack(Path(tmp), args)
        try:
            with TtsClient(stack.frontend, timeout_s=600) as client:
                results = {label: run_row(stack, client, args, low, high) for label, low, high in rows}
        finally:
            stack.close()
    print(f"openai-http engine, burst of {args.jobs} jobs (+{URGENT} high priority) against a server whose first "
          f"audio takes {args.base_ms:.0f} ms + {args.per_request_ms:.0f} ms per request in flight; "
          f"target {args.target_ms:.0f} ms")
    print(f"{'capacity':>10} {'jobs/s':>7} {'vs 64':>6} {'TTFA p50':>9} {'TTFA p90':>9} {'vs 64':>6} "
          f"{'latency p50':>12} {'p90':>7} {'urgent p50':>11}")
    base = results["fixed 64"]
    for label, r in results.items():
        print(f"{label:>10} {r['rate']:7.1f} {r['rate'] / base['rate']:6.2f} {r['ttfa50']:7.0f}ms {r['ttfa90']:7.0f}ms "
              f"{r['ttfa90'] / base['ttfa90']:6.2f} {r['lat50']:10.0f}ms {r['lat90']:5.0f}ms {r['urgent50']:9.0f}ms")


if __name__ == "__main__":
    main()
