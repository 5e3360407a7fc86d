"""Memory bounded by bytes: a client that sends 1,000 long jobs and never reads its replies.

The broker's RSS is sampled (psutil) while a scripted worker answers every job with 512 KiB of audio
(512 MiB in all). Unbounded, the broker would hold all of it for the silent client; with the byte budgets
(retained results, the per-client backlog, the journal's audio) it holds about their sum. The assertion
uses a generous bound derived from the budgets, not a timing; the figures are printed.
"""

from __future__ import annotations

import secrets
from typing import Callable

import psutil
import pytest
import zmq

from tts_protocol import Command, as_body, encode

from harness import BrokerProc, wait_for
from peers import RawClient, RawWorker

pytestmark = pytest.mark.timeout(300)

MiB = 1024 * 1024
JOBS = 1000
AUDIO = 512 * 1024
RETAINED = 32 * MiB
BACKLOG = 16 * MiB
SNDHWM = 8
JOURNAL_AUDIO_MB = 32


def test_a_client_that_never_reads_keeps_the_broker_within_its_byte_budgets(
        broker_factory: Callable[..., BrokerProc], ctx: zmq.Context) -> None:
    b = broker_factory("--no-cache", "--journal-max-audio-mb", str(JOURNAL_AUDIO_MB),
                       "--client-backlog-max-bytes", str(BACKLOG),
                       "--client-sndhwm", str(SNDHWM), "--max-retained-bytes", str(RETAINED),
                       "--heartbeat-interval-s", "30", "--log-level", "INFO")
    assert b.proc is not None
    proc = psutil.Process(b.proc.pid)
    worker = RawWorker(ctx, b.backend, engine="tone", model="tone-v1")
    observer = RawClient(ctx, b.frontend)
    observer.ping()
    baseline = proc.memory_info().rss

    silent = ctx.socket(zmq.DEALER)  # never calls recv: ZeroMQ and the kernel hold as little as allowed
    silent.setsockopt(zmq.LINGER, 0)
    silent.setsockopt(zmq.RCVHWM, 1)
    silent.setsockopt(zmq.RCVBUF, 4096)
    silent.setsockopt(zmq.ROUTING_ID, b"silent-" + secrets.token_hex(4).encode())
    silent.connect(b.frontend)
    for i in range(JOBS):
        silent.send_multipart(encode(Command.SUBMIT, as_body(Command.SUBMIT, {
            "job_id": f"long-{i}", "text": f"a long chapter number {i}", "model": "tone"})))

    pcm = bytes(range(256)) * (AUDIO // 256)
    peak = baseline
    for _ in range(JOBS):
        job = worker.next_job(timeout_s=30)
        worker.result(job, pcm=pcm)
        peak = max(peak, proc.memory_info().rss)
    view = wait_for(lambda: (v := observer.status()).jobs["done"] >= JOBS and v, 60, what="all jobs done")
    peak = max(peak, proc.memory_info().rss)
    jobs = view.jobs
    backlog = jobs["client_backlog"]
    budget = RETAINED + BACKLOG + SNDHWM * AUDIO
    print(f"\nbroker RSS: baseline {baseline / MiB:.0f} MiB, peak {peak / MiB:.0f} MiB "
          f"(+{(peak - baseline) / MiB:.0f} MiB) for {JOBS} x {AUDIO // 1024} KiB = {JOBS * AUDIO / MiB:.0f} MiB "
          f"of unread results; retained {jobs['retained_bytes'] / MiB:.0f} MiB (dropped {jobs['retained_dropped']}),"
          f" backlog {backlog['bytes'] / MiB:.1f} MiB (dropped {backlog['dropped']} replies, "
          f"{backlog['dropped_bytes'] / MiB:.0f} MiB), journal audio {jobs['journal_audio_bytes'] / MiB:.0f} MiB")
    assert backlog["dropped"] > 0 and backlog["bytes"] <= BACKLOG
    assert jobs["retained_bytes"] <= jobs["retained_max_bytes"]
    # Generous: twice the budgets plus 64 MiB of slack, still well under the 512 MiB an unbounded broker holds.
    assert peak - baseline < 2 * budget + 64 * MiB, f"broker grew by {(peak - baseline) / MiB:.0f} MiB"

    # The journal's audio BLOBs are pruned by bytes too (oldest finished jobs first), on its purge timer.
    view = wait_for(lambda: (v := observer.status()).jobs["journal_audio_bytes"] <= JOURNAL_AUDIO_MB * MiB and v,
                    60, what="journal audio pruned to its budget")
    assert view.jobs["journal_pruned_jobs"] > 0
    print(f"journal audio after pruning: {view.jobs['journal_audio_bytes'] / MiB:.0f} MiB "
          f"({view.jobs['journal_pruned_jobs']} jobs pruned)")

    silent.close(0)  # the client leaves: what was held for it goes too
    wait_for(lambda: observer.status().jobs["client_backlog"]["bytes"] == 0, 30, what="backlog freed")
    worker.close()
    observer.close()
