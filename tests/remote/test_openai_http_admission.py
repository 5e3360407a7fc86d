"""Admission by time to first audio: the AIMD limit on its own, then a burst of 200 jobs against a server whose
first audio slows as its load grows, adaptive capacity vs a fixed high one (same server, same run)."""

from __future__ import annotations

import math
import time
from typing import Callable

import pytest

from tts_client import TtsClient
from tts_worker.engines.openai_http.admission import AdaptiveLimit, TtfaWindow

from harness import BrokerProc, Proc, wait_for
from remote_fixtures import SpeechServer, openai_worker, speech_server  # noqa: F401 (fixtures)

TARGET_MS = 400
JOBS = 200


@pytest.mark.unit
@pytest.mark.timeout(5)
def test_aimd_rises_only_when_used_cuts_once_per_round_and_holds_in_the_band() -> None:
    limit = AdaptiveLimit(target_ms=100, min_limit=1, max_limit=8)
    limit.observe(10, started_at=0.0, in_flight_at_start=1, now=0.1)  # fast and in use: slow start, +1
    assert limit.limit == 2
    limit.observe(10, started_at=0.1, in_flight_at_start=1, now=0.2)  # fast but the limit was not in use
    assert limit.limit == 2
    for _ in range(20):
        limit.observe(10, started_at=0.2, in_flight_at_start=8, now=0.3)
    assert limit.limit == 8  # capped at max
    limit.observe(150, started_at=0.2, in_flight_at_start=8, now=1.0)  # over the target: cut to 6
    limit.observe(150, started_at=0.5, in_flight_at_start=8, now=1.1)  # sent before the cut: no second cut
    assert (limit.limit, limit.cuts) == (6, 1)
    limit.observe(90, started_at=1.2, in_flight_at_start=6, now=1.3)  # inside the band (80..100 ms): hold
    assert limit.limit == 6
    limit.observe(70, started_at=1.2, in_flight_at_start=6, now=1.4)  # under the band, above half: +1/limit
    assert limit.limit == 6
    for _ in range(6):
        limit.observe(70, started_at=1.2, in_flight_at_start=7, now=1.5)
    assert limit.limit == 7
    for i in range(20):
        limit.congested(started_at=2.0 + i, now=2.0 + i + 0.5)
    assert limit.limit == 1  # never below min


@pytest.mark.unit
@pytest.mark.timeout(5)
def test_ttfa_window_percentiles() -> None:
    window = TtfaWindow(size=10)
    assert window.percentile(90) is None
    for value in range(1, 21):
        window.add(float(value))
    assert (window.percentile(50), window.percentile(90), window.count) == (15.0, 19.0, 20)


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


@pytest.mark.timeout(240)
def test_burst_adaptive_capacity_keeps_p90_ttfa_under_target_where_fixed_64_does_not(
        broker: BrokerProc, speech_server: Callable[..., SpeechServer], openai_worker: Callable[..., Proc],
        make_client: Callable[..., TtsClient]) -> None:
    # first audio = 40 ms + 15 ms per request already in flight: 64 at once -> about 1 s, 24 -> 400 ms
    server = speech_server(base_ms=40, per_request_ms=15, chunks=4, chunk_ms=20)
    client = make_client(broker.frontend, timeout_s=180)
    figures = {}
    for label, opts in (("adaptive 1..64", {"min_concurrency": 1, "max_concurrency": 64}),
                        ("fixed 64", {"min_concurrency": 64, "max_concurrency": 64})):
        worker = openai_worker(broker, server.v1, ttfa_target_ms=TARGET_MS, **opts)
        wait_for(lambda: any(w.engine == "openai-http" for w in client.broker_status(timeout_s=5).workers), 30,
                 what="the worker registered")
        server.reset()
        started = time.monotonic()
        handles = [client.submit(f"Burst line {i}. Some words to say.", speaker=f"voice{i % 4}")
                   for i in range(JOBS)]
        results = [h.result() for h in handles]
        elapsed = time.monotonic() - started
        assert all(r.num_frames > 0 for r in results)
        stats = server.stats()
        ttfa = stats["ttfa_ms"]
        assert len(ttfa) == JOBS
        figures[label] = (p(ttfa, 50), p(ttfa, 90), JOBS / elapsed, stats["max_in_flight"])
        assert worker.stop() == 0
        wait_for(lambda: not client.broker_status(timeout_s=5).workers, 20, what="the worker gone")
    for label, (p50, p90, rate, peak) in figures.items():
        print(f"{label:>15}: server TTFA p50 {p50:6.0f} ms, p90 {p90:6.0f} ms (target {TARGET_MS}); "
              f"{rate:5.1f} jobs/s; at most {peak} requests in flight")
    adaptive_p90, fixed_p90 = figures["adaptive 1..64"][1], figures["fixed 64"][1]
    assert adaptive_p90 <= TARGET_MS < fixed_p90
    assert figures["adaptive 1..64"][3] < figures["fixed 64"][3]
