"""Attack (issue 19, item 14): client-chosen `model` names became Prometheus labels that were never pruned.

20,000 made-up routing keys made /metrics 10 MB. Now only keys some worker serves (or pinned ones) are labels,
the rest are `other`, and series of keys and workers that are gone are dropped.
"""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tts_protocol.messages import Ready, Submit, WorkerResult

from tts_broker.core import BrokerCore
from tts_broker.metrics import MetricsHook
from tts_broker.settings import BrokerSettings
from tts_broker.status import BrokerInfo

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


def labels(hook: MetricsHook) -> set[str]:
    text = generate_latest(hook.registry).decode()
    return {s.labels["model"] for family in text_string_to_metric_families(text) for s in family.samples
            if "model" in s.labels}


def setup(**over: Any) -> tuple[BrokerCore, MetricsHook]:
    hook = MetricsHook(pinned_models=["fish-speech"])
    life = BrokerCore(BrokerSettings(_env_file=None, max_queue=50_000, **over), [hook])  # type: ignore[call-arg]
    hook.attach(life, BrokerInfo(broker_id="b-test", version="0", started_at=0.0))
    return life, hook


def test_made_up_models_share_one_label_and_gone_keys_are_pruned() -> None:
    life, hook = setup(unroutable_timeout_s=0)
    life.life.worker_ready(b"w-1", Ready(worker_id="w-1", engine="tone", model="v1"), 1.0)
    life.life.submit(b"c", Submit(job_id="t1", text="hi", model="tone"), 1.0, 1.0)
    life.dispatch(1.0)
    for i in range(5_000):
        life.life.submit(b"c", Submit(job_id=f"x{i}", text="hi", model=f"made-up-{i}"), 1.0, 1.0)
    worker = life.workers.get(b"w-1")
    assert worker is not None
    life.life.complete(worker, WorkerResult(job_id="t1", attempt=1, sample_rate=16000), b"\x00\x00" * 160, 1.5)
    hook.tick(2.0)
    seen = labels(hook)
    assert seen <= {"tone", "tone:v1", "other", "fish-speech", "any"}, sorted(seen)[:10]
    assert {"tone", "other"} <= seen
    assert len(generate_latest(hook.registry)) < 20_000
    # The worker leaves; after the grace period its key's series go, and the worker's own ones at once.
    life.life.worker_gone(worker, "died", 3.0)
    hook.tick(3.0)
    assert not any(w for w in hook.snapshot.workers)
    hook.tick(3.0 + hook.labels.grace_s + 1)
    assert "tone" not in labels(hook) and "tone:v1" not in labels(hook)
    assert "other" in labels(hook)  # the made-up keys' jobs are still queued


def test_a_pinned_model_is_labelled_with_no_worker_for_scale_from_zero() -> None:
    life, hook = setup()
    life.life.submit(b"c", Submit(job_id="f1", text="hi", model="fish-speech"), 1.0, 1.0)
    hook.tick(2.0)
    assert "fish-speech" in labels(hook)
