"""ReloadTracker in-process: outcomes by worker process (host, pid, name), and `missing` at the deadline."""

from __future__ import annotations

import pytest

from tts_protocol.messages import Ready, ReloadReply

from tts_broker.outbox import Outbox
from tts_broker.reloads import ReloadTracker
from tts_broker.workers import WorkerRecord

pytestmark = pytest.mark.unit


def ready(worker_id: str, pid: int, reload_error: str = "") -> Ready:
    return Ready(worker_id=worker_id, name="w", host="h", pid=pid, engine="tone", reload_error=reload_error)


def record(worker_id: str, pid: int) -> WorkerRecord:
    return WorkerRecord(identity=worker_id.encode(), ready=ready(worker_id, pid), registered_at=0.0, last_seen=0.0)


def replies(outbox: Outbox) -> list[ReloadReply]:
    return [body for _w, _id, _cmd, body, _p in outbox.now if isinstance(body, ReloadReply)]


def test_outcomes_come_from_the_re_ready_and_the_deadline_marks_the_rest_missing() -> None:
    outbox = Outbox(durable=False)
    tracker = ReloadTracker(outbox)
    tracker.wait(b"client", "r1", [record("w-a", 1), record("w-b", 2), record("w-c", 3)], now=0.0, wait_s=10)
    tracker.worker_ready(ready("w-a", 1))  # the old id again: not the post-reload READY
    tracker.worker_ready(ready("w-a2", 1))
    tracker.worker_ready(ready("w-b2", 2, reload_error="checkpoint not found"))
    tracker.worker_ready(ready("w-x", 99))  # a worker nobody told
    tracker.tick(5.0)
    assert replies(outbox) == []
    tracker.tick(10.0)
    (reply,) = replies(outbox)
    assert reply.waited and reply.workers == 3
    got = {o.worker_id: (o.outcome, o.new_worker_id, o.error) for o in reply.outcomes}
    assert got == {"w-a": ("reloaded", "w-a2", ""), "w-b": ("failed", "w-b2", "checkpoint not found"),
                   "w-c": ("missing", "", "")}
    assert tracker.pending == []


def test_the_reply_goes_as_soon_as_every_worker_is_back() -> None:
    outbox = Outbox(durable=False)
    tracker = ReloadTracker(outbox)
    tracker.wait(b"client", "r1", [record("w-a", 1)], now=0.0, wait_s=10)
    tracker.worker_ready(ready("w-a2", 1))
    (reply,) = replies(outbox)
    assert [o.outcome for o in reply.outcomes] == ["reloaded"]
    tracker.wait(b"client", "r2", [], now=0.0, wait_s=10)  # nobody told: answered at once
    assert replies(outbox)[-1].workers == 0
