"""The worker against a broker-peer played by the test: a real ROUTER socket speaking TTSP/2.

These pin the worker's side of PROTOCOL.md sections 4 and 5 exactly (what it sends, when, and on which
socket), including faults a real broker would rarely produce on demand.
"""

from __future__ import annotations

import os
import signal
import time
import types
from pathlib import Path
from typing import Callable, Optional

import msgpack
import psutil
import pytest

from tts_protocol import Command

from tts_worker.exit_codes import ExitCode

from harness import Proc, wait_for
from peers import WorkerScriptedBroker

pytestmark = pytest.mark.timeout(90)

FAST = ["--heartbeat-interval-s", "0.2", "--cancel-grace-s", "2"]


@pytest.fixture
def worker(start_worker: Callable[..., Proc], fake_broker: WorkerScriptedBroker) -> Callable[..., Proc]:
    """Start one worker process (no supervisor) on the fake broker."""

    def start(opts: Optional[dict[str, object]] = None, *extra: str, supervised: bool = False) -> Proc:
        args = [*FAST, *extra] + ([] if supervised else ["--single"])
        return start_worker(fake_broker, engine="tone", opts=opts, extra_args=args)

    return start


def test_ready_then_job_with_stream(worker: Callable[..., Proc], fake_broker: WorkerScriptedBroker) -> None:
    proc = worker()
    rid, ready = fake_broker.expect(Command.W_READY)
    body = ready.body
    assert rid.decode() == body.worker_id and len(body.worker_id) == 18 and body.worker_id.startswith("w-")
    int(body.worker_id[2:], 16)
    assert (body.engine, body.model, body.capacity, body.sample_rate, body.licence) == \
        ("tone", "tone-v1", 1, 16000, "Apache-2.0")
    assert body.pid == proc.pid and body.name == "test-1"
    fake_broker.job(rid, "j-1", "First sentence. Second one!", stream=True, speaker="ann")
    partials = [fake_broker.expect(Command.W_PARTIAL)[1] for _ in range(2)]
    _, result = fake_broker.expect(Command.W_RESULT)
    assert [p.body.seq for p in partials] == [0, 1]
    assert result.body.job_id == "j-1" and result.body.attempt == 1 and result.body.sample_rate == 16000
    assert result.payload == b"".join(p.payload for p in partials)
    assert len(result.payload) == 2 * round(0.040 * 16000 + 0.004 * 16000 * len("First sentence.")) + \
        2 * round(0.040 * 16000 + 0.004 * 16000 * len("Second one!"))
    _, beat = fake_broker.expect(Command.W_HEARTBEAT, where=lambda r, m: m.body.stats.get("jobs_done") == 1)
    stats = beat.body.stats
    assert stats["busy"] == 0 and stats["warm"] == [] and stats["rss_bytes"] > 0 and "engine" in stats
    assert "gpu_mem_bytes" not in stats  # torch is not loaded by the tone engine


def test_heartbeats_continue_during_a_long_job(worker: Callable[..., Proc], fake_broker: WorkerScriptedBroker) -> None:
    worker({"latency_s": 3})
    rid, _ = fake_broker.expect(Command.W_READY)
    fake_broker.job(rid, "long-1")
    started = time.monotonic()
    beats: list[float] = []
    while True:
        item = fake_broker.recv(5)
        assert item is not None, "worker went silent during the job"
        if item[1].command is Command.W_HEARTBEAT:
            beats.append(time.monotonic())
            assert item[1].body.stats["busy"] == 1
        elif item[1].command is Command.W_RESULT:
            break
    assert time.monotonic() - started >= 2.9
    assert len(beats) >= 10
    assert max(b - a for a, b in zip([started, *beats], beats, strict=False)) < 1.0


def test_engine_error_and_unknown_lease_cancel(worker: Callable[..., Proc], fake_broker: WorkerScriptedBroker) -> None:
    worker({"fail_on": "BAD"})
    rid, _ = fake_broker.expect(Command.W_READY)
    fake_broker.send_to(rid, Command.B_CANCEL, {"job_id": "never-leased", "attempt": 1})
    fake_broker.job(rid, "bad-1", "this is BAD")
    _, fail = fake_broker.expect(Command.W_FAIL)
    assert (fail.body.job_id, fail.body.code, fail.body.retryable) == ("bad-1", "engine_error", False)
    fake_broker.job(rid, "ok-1", "this is fine", voice={"length_scale": "nope"})
    _, fail = fake_broker.expect(Command.W_FAIL)
    assert (fail.body.job_id, fail.body.code) == ("ok-1", "engine_error")


def test_cancel_running_job(worker: Callable[..., Proc], fake_broker: WorkerScriptedBroker) -> None:
    worker({"latency_s": 30})
    rid, _ = fake_broker.expect(Command.W_READY)
    fake_broker.job(rid, "c-1", attempt=2)
    fake_broker.expect(Command.W_HEARTBEAT, where=lambda r, m: m.body.stats["busy"] == 1)
    fake_broker.send_to(rid, Command.B_CANCEL, {"job_id": "c-1", "attempt": 2, "reason": "timeout"})
    _, fail = fake_broker.expect(Command.W_FAIL, timeout_s=5)
    assert (fail.body.job_id, fail.body.attempt, fail.body.code, fail.body.retryable) == ("c-1", 2, "cancelled", False)
    fake_broker.job(rid, "c-2", "after cancel")
    fake_broker.send_to(rid, Command.B_CANCEL, {"job_id": "c-2", "attempt": 1})
    _, fail = fake_broker.expect(Command.W_FAIL)
    assert fail.body.code == "cancelled"


def test_hung_engine_exits_after_grace(worker: Callable[..., Proc], fake_broker: WorkerScriptedBroker) -> None:
    proc = worker({"hang_on": "HANG"})
    rid, _ = fake_broker.expect(Command.W_READY)
    fake_broker.job(rid, "h-1", "HANG here")
    fake_broker.expect(Command.W_HEARTBEAT, where=lambda r, m: m.body.stats["busy"] == 1)
    fake_broker.send_to(rid, Command.B_CANCEL, {"job_id": "h-1", "attempt": 1})
    _, bye = fake_broker.expect(Command.W_DISCONNECT, timeout_s=10)
    assert "hung" in bye.body.reason
    wait_for(lambda: not proc.alive(), 10, what="hung worker to exit")
    assert proc.popen.returncode == ExitCode.ENGINE_HUNG


def test_garbage_from_the_broker_is_ignored(worker: Callable[..., Proc], fake_broker: WorkerScriptedBroker) -> None:
    proc = worker()
    rid, _ = fake_broker.expect(Command.W_READY)
    garbage = [
        [b"junk"],
        [b"TTSW2"],
        [b"xTTSW2\x31", b"\x80"],
        [b"TTSC2\x31", b"\x80"],
        [b"TTSW2\x99", b"\x80"],
        [b"TTSW2\x31", b"\xc1\xc1"],
        [b"TTSW2\x31", msgpack.packb([1, 2])],
        [b"TTSW2\x31", msgpack.packb({"job_id": "ok", "attempt": 0, "text": "hi"})],
        [b"TTSW2\x31", msgpack.packb({"job_id": "bad id!", "attempt": 1, "text": "hi"})],
        [b"TTSW2\x31", msgpack.packb({"job_id": "j", "attempt": 1, "text": "hi"}), b"payload"],
        [b"TTSW2\x24", msgpack.packb({})],  # a worker command sent to the worker
        [b"TTSW2\x32", msgpack.packb({"job_id": "j", "attempt": "1"})],
        [b"TTSW2\x35", msgpack.packb({"options": {"x": [1]}})],
        [os.urandom(64) for _ in range(5)],
    ]
    for frames in garbage:
        fake_broker.send_raw(rid, frames)
    fake_broker.job(rid, "after-garbage")
    _, result = fake_broker.expect(Command.W_RESULT)
    assert result.body.job_id == "after-garbage" and proc.alive()
    assert proc.log().count("malformed message from broker ignored") >= len(garbage) - 1


def test_silent_broker_means_reconnect_with_new_identity(worker: Callable[..., Proc],
                                                         fake_broker: WorkerScriptedBroker) -> None:
    worker({"latency_s": 1.5}, "--heartbeat-liveness", "3")
    fake_broker.answer_heartbeats = False
    rid, _ = fake_broker.expect(Command.W_READY)
    fake_broker.job(rid, "lost-1")
    # Say nothing more: after 3 x 0.2 s the worker gives the socket up and comes back as a new peer.
    rid2, ready2 = fake_broker.expect(Command.W_READY, timeout_s=10)
    assert rid2 != rid and ready2.body.worker_id == rid2.decode()
    fake_broker.answer_heartbeats = True
    fake_broker.send_to(rid2, Command.B_HEARTBEAT, {})
    # The job leased on the old socket is never reported, on either socket.
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        item = fake_broker.recv(0.1)
        if item is not None:
            assert item[1].command not in (Command.W_RESULT, Command.W_FAIL, Command.W_PARTIAL), item
            assert item[0] == rid2 or item[1].command is Command.W_HEARTBEAT
    fake_broker.job(rid2, "new-1")
    _, result = fake_broker.expect(Command.W_RESULT, where=lambda r, m: r == rid2)
    assert result.body.job_id == "new-1"


def test_broker_disconnect_and_restart(worker: Callable[..., Proc], fake_broker: WorkerScriptedBroker) -> None:
    worker(None, "--heartbeat-liveness", "5")
    rid, _ = fake_broker.expect(Command.W_READY)
    fake_broker.send_to(rid, Command.B_DISCONNECT, {"reason": "unknown worker"})
    rid2, _ = fake_broker.expect(Command.W_READY, timeout_s=10)
    assert rid2 != rid
    fake_broker.restart()
    rid3, _ = fake_broker.expect(Command.W_READY, timeout_s=20, where=lambda r, m: r not in (rid, rid2))
    fake_broker.job(rid3, "after-restart")
    _, result = fake_broker.expect(Command.W_RESULT)
    assert result.body.job_id == "after-restart"


def test_sigterm_finishes_the_current_job_first(worker: Callable[..., Proc], fake_broker: WorkerScriptedBroker) -> None:
    proc = worker({"latency_s": 1.5})
    rid, _ = fake_broker.expect(Command.W_READY)
    fake_broker.job(rid, "t-1")
    fake_broker.expect(Command.W_HEARTBEAT, where=lambda r, m: m.body.stats["busy"] == 1)
    proc.signal(signal.SIGTERM)
    _, result = fake_broker.expect(Command.W_RESULT)
    assert result.body.job_id == "t-1"
    _, bye = fake_broker.expect(Command.W_DISCONNECT)
    assert bye.body.reason == "shutdown"
    wait_for(lambda: not proc.alive(), 10, what="worker exit")
    assert proc.popen.returncode == 0
    names = [m.command for _, m in fake_broker.log]
    assert names.index(Command.W_RESULT) < names.index(Command.W_DISCONNECT)


def test_jobs_offered_while_draining_are_refused_retryable(worker: Callable[..., Proc],
                                                           fake_broker: WorkerScriptedBroker) -> None:
    proc = worker({"latency_s": 2, "capacity": 2})
    rid, ready = fake_broker.expect(Command.W_READY)
    assert ready.body.capacity == 2
    fake_broker.job(rid, "d-1")
    fake_broker.expect(Command.W_HEARTBEAT, where=lambda r, m: m.body.stats["busy"] == 1)
    proc.signal(signal.SIGTERM)
    wait_for(lambda: "stop requested" in proc.log(), 10, what="the worker to notice SIGTERM")
    fake_broker.job(rid, "d-2")
    _, fail = fake_broker.expect(Command.W_FAIL)
    assert (fail.body.job_id, fail.body.code, fail.body.retryable) == ("d-2", "shutting_down", True)
    _, result = fake_broker.expect(Command.W_RESULT)
    assert result.body.job_id == "d-1"
    fake_broker.expect(Command.W_DISCONNECT)
    wait_for(lambda: not proc.alive(), 10, what="worker exit")
    assert proc.popen.returncode == 0


def test_max_jobs_leaves_cleanly_with_recycle_code(worker: Callable[..., Proc],
                                                   fake_broker: WorkerScriptedBroker) -> None:
    proc = worker(None, "--max-jobs", "2")
    rid, _ = fake_broker.expect(Command.W_READY)
    for i in range(2):
        fake_broker.job(rid, f"m-{i}")
        fake_broker.expect(Command.W_RESULT)
    _, bye = fake_broker.expect(Command.W_DISCONNECT)
    assert "max_jobs" in bye.body.reason
    wait_for(lambda: not proc.alive(), 10, what="worker exit")
    assert proc.popen.returncode == ExitCode.RECYCLE


def test_reload_with_new_options(worker: Callable[..., Proc], fake_broker: WorkerScriptedBroker) -> None:
    worker({"latency_s": 1})
    rid, ready = fake_broker.expect(Command.W_READY)
    assert ready.body.capacity == 1
    fake_broker.job(rid, "r-1")
    fake_broker.expect(Command.W_HEARTBEAT, where=lambda r, m: m.body.stats["busy"] == 1)
    fake_broker.send_to(rid, Command.B_RELOAD, {"options": {"capacity": 2, "latency_s": None}})
    _, result = fake_broker.expect(Command.W_RESULT)  # the job in hand is finished first
    assert result.body.job_id == "r-1"
    _, bye = fake_broker.expect(Command.W_DISCONNECT)
    assert bye.body.reason == "reload"
    rid2, ready2 = fake_broker.expect(Command.W_READY)
    assert rid2 != rid and ready2.body.capacity == 2
    started = time.monotonic()
    fake_broker.job(rid2, "r-2")
    fake_broker.expect(Command.W_RESULT)
    assert time.monotonic() - started < 0.9  # latency_s was removed by the reload
    # A reload that fails keeps the engine and says why in the heartbeat.
    fake_broker.send_to(rid2, Command.B_RELOAD, {"options": {"no_such_option": 1}})
    rid3, ready3 = fake_broker.expect(Command.W_READY)
    assert ready3.body.capacity == 2
    _, beat = fake_broker.expect(Command.W_HEARTBEAT, where=lambda r, m: r == rid3)
    assert "no_such_option" in beat.body.stats["reload_error"]
    fake_broker.job(rid3, "r-3")
    fake_broker.expect(Command.W_RESULT, where=lambda r, m: m.body.job_id == "r-3")


def test_supervisor_restarts_killed_child_and_stops_on_sigterm(worker: Callable[..., Proc],
                                                               fake_broker: WorkerScriptedBroker) -> None:
    proc = worker(None, "--concurrency", "2", supervised=True)
    readies = {fake_broker.expect(Command.W_READY)[1].body.name for _ in range(2)}
    assert readies == {"test-1/0", "test-1/1"}
    supervisor = psutil.Process(proc.pid)
    children = wait_for(lambda: supervisor.children() if len(supervisor.children()) == 2 else None, 10)
    victim = children[0]
    victim_name = next(m.body.name for _, m in fake_broker.log
                       if m.command is Command.W_READY and m.body.pid == victim.pid)
    os.kill(victim.pid, signal.SIGKILL)
    _, again = fake_broker.expect(Command.W_READY, timeout_s=15,
                                  where=lambda r, m: m.body.pid not in (c.pid for c in children))
    assert again.body.name == victim_name
    assert "restarting in 1 s" in proc.log()
    proc.signal(signal.SIGTERM)
    wait_for(lambda: not proc.alive(), 15, what="supervisor exit")
    assert proc.popen.returncode == 0
    while fake_broker.recv(0.5) is not None:
        pass
    assert sum(1 for _, m in fake_broker.log if m.command is Command.W_DISCONNECT) >= 2


def test_supervisor_restarts_recycled_child_at_once(worker: Callable[..., Proc],
                                                    fake_broker: WorkerScriptedBroker) -> None:
    proc = worker(None, "--max-jobs", "1", supervised=True)
    rid, first = fake_broker.expect(Command.W_READY)
    fake_broker.job(rid, "once")
    fake_broker.expect(Command.W_RESULT)
    fake_broker.expect(Command.W_DISCONNECT)
    started = time.monotonic()
    rid2, second = fake_broker.expect(Command.W_READY, where=lambda r, m: m.body.pid != first.body.pid)
    assert time.monotonic() - started < 5
    assert second.body.name == first.body.name == "test-1/0"
    assert proc.alive() and "recycled" in proc.log()


def test_supervisor_stops_when_the_engine_cannot_load(start_worker: Callable[..., Proc],
                                                      fake_broker: WorkerScriptedBroker, tmp_path: Path) -> None:
    proc = start_worker(fake_broker, engine="piper", opts={"model": str(tmp_path / "nope.onnx")},
                        concurrency=2)
    wait_for(lambda: not proc.alive(), 30, what="supervisor to give up")
    assert proc.popen.returncode == ExitCode.LOAD_FAILED
    log = proc.log()
    assert "could not start its engine piper" in log and "nope.onnx" in log and "does not exist" in log
    assert "restarting in" not in log


def test_max_rss_leaves_cleanly_with_recycle_code(worker: Callable[..., Proc],
                                                  fake_broker: WorkerScriptedBroker) -> None:
    proc = worker(None, "--max-rss-mb", "1")
    rid, _ = fake_broker.expect(Command.W_READY)
    fake_broker.job(rid, "rss-1")
    fake_broker.expect(Command.W_RESULT)
    _, bye = fake_broker.expect(Command.W_DISCONNECT)
    assert "max_rss_mb" in bye.body.reason
    wait_for(lambda: not proc.alive(), 10, what="worker exit")
    assert proc.popen.returncode == ExitCode.RECYCLE


def test_sigterm_between_brokers_gives_up_the_held_job_at_once(start_worker: Callable[..., Proc],
                                                               fake_broker: WorkerScriptedBroker,
                                                               dead_endpoint: str) -> None:
    """With an endpoint list a worker keeps a job whose broker died for the next broker (survival.py). A stop
    while no broker answers must not wait for one: a leaving worker opens no new connection, so nobody could
    take the job back, and `docker compose down` waited the 30 s keep time until SIGKILL."""
    endpoints = types.SimpleNamespace(backend=f"{fake_broker.backend},{dead_endpoint}")
    proc = start_worker(endpoints, engine="tone", opts={"latency_s": 1.5}, extra_args=[*FAST, "--single"])
    rid, _ = fake_broker.expect(Command.W_READY)
    fake_broker.job(rid, "held-1")
    fake_broker.expect(Command.W_HEARTBEAT, where=lambda r, m: m.body.stats["busy"] == 1)
    fake_broker.close()  # the broker is gone; the next endpoint refuses connections
    wait_for(lambda: "held-1 attempt 1: finished while between brokers; held for the next one" in proc.log(), 20,
             what="the finished job held for the next broker")
    stopped_at = time.monotonic()
    proc.signal(signal.SIGTERM)
    wait_for(lambda: not proc.alive(), 20, what="worker exit")
    assert time.monotonic() - stopped_at < 10, proc.log()[-2000:]
    assert proc.popen.returncode == 0
    assert "leaving between brokers: giving up 1 job(s) in hand" in proc.log()
