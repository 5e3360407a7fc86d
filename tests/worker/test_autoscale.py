"""The autoscaling supervisor (`tts-worker --min N --max M`): the policy in-process, then real processes.

The process test drives 200 slow tone jobs through a real broker: the supervisor must grow to --max while
jobs wait, recycle processes (--max-jobs) without losing a job, show its decisions in the status view, and
shrink back to --min once the queue has been empty for --scale-down-idle-s.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from typing import Any, Callable

import pytest

from tests.conftest import BrokerProc, Proc, wait_for
from tts_worker.autoscale import MIB, Autoscaler, Observation, ScalePolicy
from tts_worker.broker_probe import derive_frontend


def seen(now: float, processes: int, depth: int | None, idle: int = 0, *, available: int = 8 * 1024 * MIB,
         rss: int = 0) -> Observation:
    return Observation(now=now, processes=processes, queue_depth=depth, idle_slots=idle, busy_slots=processes - idle,
                       available_bytes=available, measured_rss_bytes=rss)


@pytest.mark.unit
def test_policy_grows_after_the_wait_and_shrinks_after_idle() -> None:
    scaler = Autoscaler(ScalePolicy(min_workers=1, max_workers=4, scale_up_wait_s=1.0, scale_down_idle_s=5.0))
    assert scaler.decide(seen(0.0, 0, 0)).delta == 1  # below min
    assert scaler.decide(seen(1.0, 1, 10)).delta == 0  # backlog, not yet waited long enough
    grow = scaler.decide(seen(2.5, 1, 10))
    assert grow.delta == 3 and "queue 10" in grow.reason  # up to max at once
    assert scaler.decide(seen(3.0, 4, 2, idle=2)).delta == 0  # jobs fit the idle slots
    assert scaler.decide(seen(4.0, 4, 0, idle=4)).delta == 0  # idle clock starts
    assert scaler.decide(seen(8.0, 4, 0, idle=4)).delta == 0
    shrink = scaler.decide(seen(9.5, 4, 0, idle=4))
    assert shrink.delta == -3 and "idle" in shrink.reason  # down to min
    assert scaler.decide(seen(20.0, 1, 0, idle=1)).delta == 0  # never below min
    starting = Autoscaler(ScalePolicy(min_workers=0, max_workers=8, scale_up_wait_s=0.0))
    pending = Observation(now=0.0, processes=3, queue_depth=3, idle_slots=0, busy_slots=0,
                          available_bytes=8 * 1024 * MIB, measured_rss_bytes=0, starting=2)
    assert starting.decide(pending).delta == 1  # two processes on their way count as capacity


@pytest.mark.unit
def test_policy_respects_free_memory_and_a_silent_broker() -> None:
    policy = ScalePolicy(min_workers=0, max_workers=8, scale_up_wait_s=0.0, memory_reserve_bytes=100 * MIB)
    scaler = Autoscaler(policy)
    limited = scaler.decide(seen(0.0, 1, 50, available=400 * MIB, rss=150 * MIB))
    assert limited.delta == 2 and "memory allows 2 of 7" in limited.reason  # (400 - 100) // 150
    assert scaler.memory_limited
    none = scaler.decide(seen(1.0, 3, 50, available=200 * MIB, rss=150 * MIB))
    assert none.delta == 0 and "free memory" in none.reason
    assert scaler.decide(seen(2.0, 3, None)).delta == 0  # broker did not answer: hold
    fixed = Autoscaler(ScalePolicy(min_workers=0, max_workers=8, scale_up_wait_s=0.0,
                                   memory_reserve_bytes=0, worker_memory_bytes=1024 * MIB))
    assert fixed.decide(seen(0.0, 0, 50, available=3 * 1024 * MIB, rss=10 * MIB)).delta == 3  # the setting wins
    with pytest.raises(ValueError):
        Autoscaler(ScalePolicy(min_workers=3, max_workers=2))


@pytest.mark.unit
def test_frontend_is_derived_from_the_backend() -> None:
    assert derive_frontend("tcp://10.0.0.1:5556") == "tcp://10.0.0.1:5555"
    assert derive_frontend("ipc:///run/tts/backend") == "ipc:///run/tts/frontend"
    assert derive_frontend("inproc://x") is None


@pytest.mark.timeout(150)
def test_200_slow_jobs_scale_to_max_then_back_to_min_and_recycling_loses_none(
        broker_factory: Callable[..., BrokerProc], start_worker: Callable[..., Proc]) -> None:
    from tts_client import TtsClient

    broker = broker_factory("--no-cache", "--heartbeat-interval-s", "0.5")
    supervisor = start_worker(broker, opts={"latency_s": 0.1}, extra_args=[
        "--min", "1", "--max", "3", "--broker-frontend", broker.frontend, "--scale-up-wait-s", "0.3",
        "--scale-down-idle-s", "1.5", "--max-jobs", "25", "--heartbeat-interval-s", "0.5",
        "--log-level", "INFO"])
    with TtsClient(broker.frontend, timeout_s=120) as client:

        def mine(status: Any) -> list[Any]:
            return [w for w in status.workers if w.name.startswith("test-1/")]

        wait_for(lambda: len(mine(client.broker_status())) == 1, 30, interval_s=0.1, what="min worker up")
        peak = [0]
        supervisor_views: list[dict[str, Any]] = []
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                workers = mine(client.broker_status())
                peak[0] = max(peak[0], len(workers))
                supervisor_views.extend(w.supervisor for w in workers if w.supervisor)
                done.wait(0.2)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        handles = [client.submit(f"autoscale line {i}") for i in range(200)]
        results = [h.result() for h in handles]
        done.set()
        watcher.join(10)
        assert [r.job_id for r in results] == [h.job_id for h in handles]
        assert all(len(r.pcm) > 0 for r in results)
        assert peak[0] == 3, f"peak {peak[0]} workers; log:\n{supervisor.log()[-3000:]}"
        assert any(v.get("max") == 3 and v.get("last") for v in supervisor_views)

        wait_for(lambda: len(mine(client.broker_status())) == 1, 60, interval_s=0.2, what="back to --min")
        status = client.broker_status()
        assert status.jobs["failed"] == 0
        assert status.jobs["done"] >= 200
        shown = subprocess.run([sys.executable, "-m", "tts_client", "--broker", broker.frontend, "status"],
                               capture_output=True, text=True, timeout=30)
        assert "(min 1, max 3" in shown.stdout and "last: " in shown.stdout, shown.stdout
    log = supervisor.log()
    assert "left to be recycled" in log  # --max-jobs 25 over 200 jobs: processes were replaced mid-run
    assert "scale +" in log and "scale -" in log
    assert supervisor.stop() == 0
