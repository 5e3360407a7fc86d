"""MetricsHook in-process: counters move with the lifecycle's transitions, the snapshot holds the levels.

The core (BrokerCore) is driven directly with explicit times (as in test_lifecycle.py); the registry is read back with
prometheus-client's own exposition and parser, the way a scrape sees it.
"""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tts_protocol.messages import Fail, Ready, StatusView, Submit, WorkerResult
from tts_protocol.views import status_document

from tts_broker.core import BrokerCore
from tts_broker.metrics import MetricsHook
from tts_broker.settings import BrokerSettings
from tts_broker.status import BrokerInfo, status_view

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]


def scrape(hook: MetricsHook) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(hook.registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def at(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def setup(**over: Any) -> tuple[BrokerCore, MetricsHook]:
    hook = MetricsHook()
    settings = BrokerSettings(_env_file=None, max_attempts=2, **over)  # type: ignore[call-arg]
    life = BrokerCore(settings, [hook])
    hook.attach(life, BrokerInfo(broker_id="b-test", version="0", started_at=0.0))
    return life, hook


def test_jobs_retries_dead_letters_and_levels() -> None:
    life, hook = setup(default_model="tone")
    for i in range(3):
        life.life.submit(b"c", Submit(job_id=f"j{i}", text="hi", priority="high" if i == 0 else "normal"), 1.0, 1.0)
    hook.tick(5.0)
    found = scrape(hook)
    assert at(found, "tts_jobs_total", model="tone", state="queued") == 3
    assert at(found, "tts_queue_depth", model="tone", priority="high") == 1
    assert at(found, "tts_queue_depth", model="tone", priority="normal") == 2
    assert at(found, "tts_queue_oldest_age_seconds", model="tone") == 4.0
    life.life.worker_ready(b"w-1", Ready(worker_id="w-1", engine="tone", model="v1", capacity=2), 5.0)
    life.dispatch(5.0)
    worker = life.workers.get(b"w-1")
    assert worker is not None
    pcm = b"\x00\x00" * 16000  # one second at 16 kHz
    life.life.complete(worker, WorkerResult(job_id="j0", attempt=1, sample_rate=16000, gen_time_ms=250), pcm, 6.0)
    life.life.worker_failed(worker, Fail(job_id="j1", attempt=1, code="engine_error", retryable=True), 6.0)
    life.dispatch(6.0)
    life.life.worker_failed(worker, Fail(job_id="j1", attempt=2, code="bad_speaker", retryable=False), 6.0)
    hook.tick(7.0)
    found = scrape(hook)
    assert at(found, "tts_jobs_total", model="tone", state="done") == 1
    assert at(found, "tts_jobs_total", model="tone", state="failed") == 1
    assert at(found, "tts_job_retries_total", model="tone") == 1
    assert at(found, "tts_dead_letters_total", model="tone", code="bad_speaker") == 1
    assert at(found, "tts_worker_generation_seconds_count", worker_id="w-1", model="tone:v1") == 1
    assert at(found, "tts_worker_generation_seconds_sum", worker_id="w-1", model="tone:v1") == 0.25
    assert at(found, "tts_worker_real_time_factor", worker_id="w-1", model="tone:v1") == 0.25
    assert at(found, "tts_workers", model="tone:v1", state="busy") == 1  # j2 still runs
    assert at(found, "tts_worker_state", worker_id="w-1", model="tone:v1", state="busy") == 1
    assert at(found, "tts_jobs_in_flight") == 1
    snap = hook.snapshot
    assert [j["job_id"] for j in snap.failures] == ["j1"]
    assert snap.status == status_document(status_view(life, hook._info, 7.0))  # type: ignore[arg-type]
    life.life.worker_gone(worker, "died", 7.0)
    hook.tick(8.0)
    found = scrape(hook)
    assert not [k for k in found if k[0].startswith("tts_worker_")]
    assert at(found, "tts_workers", model="tone:v1", state="idle") == 0


def test_cache_hits_count_as_accepted_and_done() -> None:
    life, hook = setup()
    job_view_before = scrape(hook)
    assert at(job_view_before, "tts_jobs_total", model="any", state="done") == 0
    from tts_broker.hooks import CachedAudio, Hook

    class Answers(Hook):
        def may_answer(self, job: Any) -> bool:
            return True

        def lookup(self, job: Any) -> CachedAudio:
            return CachedAudio("tone", "v1", 16000, 1, "s16le", b"\x00\x00" * 10)

    life = BrokerCore(life.settings, [Answers(), hook])
    hook.attach(life, BrokerInfo(broker_id="b-test", version="0", started_at=0.0))
    life.life.submit(b"c", Submit(job_id="cached", text="hi"), 1.0, 1.0)
    [job] = life.pending_lookups()  # the server's I/O step between turns
    life.on_lookup(job, life.hooks.lookup(job), 1.0)
    hook.tick(1.0)
    found = scrape(hook)
    assert at(found, "tts_jobs_total", model="any", state="queued") == 1
    assert at(found, "tts_jobs_total", model="any", state="done") == 1


def test_status_document_adds_the_short_names_scripts_use() -> None:
    view = StatusView(broker_id="b", version="1", uptime_s=1.0, queue={"depth": 3},
                      workers=[{"worker_id": "w-1"}])  # type: ignore[list-item]
    doc = status_document(view)
    assert doc["queue_depth"] == 3 and doc["workers"][0]["id"] == "w-1" and doc["default_model"] is None
    assert doc == {**view.to_wire(), "queue_depth": 3, "workers": [{**view.to_wire()["workers"][0], "id": "w-1"}]}
