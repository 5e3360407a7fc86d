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
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from tts_client import TtsClient

from benchkit import ROOT, Stack, percentile, wait_file, wait_until, wait_workers

SERVER = ROOT / "tests" / "remote" / "loaded_speech_server.py"
URGENT = 5


def http(url: str, method: str = "GET") -> Any:
    with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=10) as response:
        return json.loads(response.read() or b"{}")


def start_server(stack: Stack, args: argparse.Namespace) -> str:
    """The loaded test speech server beside the stack; its URL."""
    ready = stack.tmp / "server.json"
    server = stack.spawn([sys.executable, str(SERVER), "--ready-file", str(ready), "--base-ms", str(args.base_ms),
                          "--per-request-ms", str(args.per_request_ms)])
    return str(wait_file(ready, server, "speech server")["url"])


def run_row(stack: Stack, server: str, client: TtsClient, args: argparse.Namespace, low: int,
            high: int) -> dict[str, float]:
    worker = stack.start_worker("openai-http", opts={"url": f"{server}/v1", "model": "bench",
                                                     "ttfa_target_ms": args.target_ms, "min_concurrency": low,
                                                     "max_concurrency": high})
    wait_workers(client, 1, proc=worker)
    http(f"{server}/stats/reset", "POST")
    started = time.monotonic()
    handles = [client.submit(f"Burst line {i}. Some words to say.", speaker=f"voice{i % 4}")
               for i in range(args.jobs)]
    urgent = [client.submit(f"Urgent line {i}.", speaker="voice0", priority="high") for i in range(URGENT)]
    latency = [float(handle.result().meta.total_time_ms) for handle in handles]  # the broker's submit -> result
    elapsed = time.monotonic() - started
    urgent_latency = [float(handle.result().meta.total_time_ms) for handle in urgent]
    ttfa = http(f"{server}/stats")["ttfa_ms"]
    stack.stop(worker)
    wait_until("the worker gone from the broker", lambda: not client.broker_status(timeout_s=5).workers)
    return {"rate": args.jobs / elapsed, "ttfa50": percentile(ttfa, 0.5), "ttfa90": percentile(ttfa, 0.9),
            "lat50": percentile(latency, 0.5), "lat90": percentile(latency, 0.9),
            "urgent50": percentile(urgent_latency, 0.5)}


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
        stack = Stack(Path(tmp))
        try:
            stack.start_broker()
            server = start_server(stack, args)
            with TtsClient(stack.frontend, timeout_s=600) as client:
                results = {label: run_row(stack, server, client, args, low, high) for label, low, high in rows}
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
