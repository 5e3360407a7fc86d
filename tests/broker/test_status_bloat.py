"""Attack (issue 19, item 11): workers whose heartbeat stats stay inside every protocol limit bloat the status.

Three scripted workers (tests/peers.py) send the largest stats the protocol allows (about 10 MB each). Before
the fix BROKER_STATUS grew past the 4 MiB clients accept, and `tts status`, `tts health`, the gateway and the
autoscaler all failed. Now each worker adds a bounded number of bytes (cut maps carry a `_truncated` marker),
readers use the fleet summary, and the worker list pages.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import msgpack
import pytest
import zmq

from tts_protocol.messages import MAX_STATS_NODES

from tests.conftest import BrokerProc, wait_for
from tests.peers import RawWorker
from tts_broker.status_budget import TRUNCATED, WORKER_STATS_BUDGET
from tts_client import TtsClient

pytestmark = pytest.mark.timeout(90)


def maximal_stats() -> dict[str, Any]:
    """Stats at the protocol's limits: 256 warm names of 1,024 characters, engine maps of 256 such strings,
    as many as fit the 4 MiB body limit (and MAX_STATS_NODES values)."""
    warm = [f"{n:04d}" + "w" * 1020 for n in range(256)]
    maps = min((MAX_STATS_NODES - 256) // 256 - 1, 14)
    engine = {f"m{i}": {f"k{j}": "x" * 1024 for j in range(256)} for i in range(maps)}
    return {"warm": warm, "engine": engine, "rss_bytes": 1 << 20}


def test_maximal_heartbeat_stats_of_three_workers_leave_status_and_health_usable(
        broker: BrokerProc, ctx: zmq.Context) -> None:
    stats = maximal_stats()
    assert 3_900_000 < len(msgpack.packb({"stats": stats})) < 4 * 1024 * 1024
    workers = [RawWorker(ctx, broker.backend, name=f"fat/{n}") for n in range(3)]
    with TtsClient(broker.frontend, request_timeout_s=10) as client:
        def all_cut() -> bool:
            for w in workers:  # also keeps them alive (1 s heartbeats, 3 missed = dead)
                w.heartbeat(**stats)
            view = client.broker_status()
            return len(view.workers) == 3 and all(TRUNCATED in w.engine_stats for w in view.workers)
        wait_for(all_cut, 30, interval_s=0.3, what="three workers with their stats cut")
        view = client.broker_status()
        for w in view.workers:
            shown = msgpack.packb([w.warm, w.engine_stats, w.supervisor])
            assert len(shown) <= WORKER_STATS_BUDGET + 64
            assert w.engine_stats[TRUNCATED]["bytes"] > 3_000_000 and w.rss_bytes == 1 << 20
        assert view.worker_count == 3 and view.summary["workers"] == 3
        assert view.serving("tone") == 3 and view.serving("tone:tone-v1") == 3 and view.serving("piper") == 0
        first = client.broker_status(workers_limit=2)
        rest = client.broker_status(workers_offset=2)
        assert [len(first.workers), len(rest.workers), rest.workers_offset, rest.worker_count] == [2, 1, 2, 3]
        assert {w.name for w in first.workers + rest.workers} == {"fat/0", "fat/1", "fat/2"}
        assert [w.name for w in client.broker_status(worker_prefix="fat/1").workers] == ["fat/1"]
        for w in workers:
            w.heartbeat(**stats)
    health = subprocess.run([sys.executable, "-m", "tts_client", "--broker", broker.frontend, "health", "--json",
                             "--model", "tone"], capture_output=True, text=True, timeout=60)
    assert health.returncode == 0, health.stderr
    assert json.loads(health.stdout)["workers"] == 3
    status = subprocess.run([sys.executable, "-m", "tts_client", "--broker", broker.frontend, "status", "--json"],
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 0 and len(status.stdout) < 200_000, status.stderr
    for w in workers:
        w.close()
