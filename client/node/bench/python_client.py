"""The Python client's half of bench.mjs: same jobs, same broker; prints one JSON line of figures.

Usage: python python_client.py URL JOBS IN_FLIGHT LATENCY_JOBS NONCE
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from concurrent.futures import FIRST_COMPLETED, wait

from tts_client import TtsClient


def main() -> None:
    url, jobs, in_flight, latency_jobs, nonce = sys.argv[1], *map(int, sys.argv[2:5]), sys.argv[5]
    with TtsClient(url) as client:
        for i in range(20):  # warm-up
            client.synthesize(f"Warm up py {nonce} {i}.", cache=False)

        lat_ms = []
        for i in range(latency_jobs):
            t0 = time.perf_counter()
            client.synthesize(f"Latency py {nonce} {i}.", cache=False)
            lat_ms.append((time.perf_counter() - t0) * 1000)

        started: dict = {}
        loaded_ms = []
        pending = set()
        t0 = time.perf_counter()
        next_job = 0
        while next_job < jobs or pending:
            while next_job < jobs and len(pending) < in_flight:
                handle = client.submit(f"Throughput py {nonce} {next_job}.", cache=False)
                started[handle.future] = time.perf_counter()
                pending.add(handle.future)
                next_job += 1
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            now = time.perf_counter()
            for future in done:
                future.result()
                loaded_ms.append((now - started.pop(future)) * 1000)
        seconds = time.perf_counter() - t0
    print(json.dumps({
        "jobs_per_s": jobs / seconds,
        "p50_ms": statistics.median(lat_ms),
        "p95_ms": statistics.quantiles(lat_ms, n=20)[-1],
        "loaded_p50_ms": statistics.median(loaded_ms),
    }))


if __name__ == "__main__":
    main()
