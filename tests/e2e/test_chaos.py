"""Chaos suite: real broker, real tone workers, real crashes. A job the broker accepted finishes or fails
clearly, whatever dies. Bounded in time; loopback only, except the network-namespace test, which builds its
own test hosts.
"""

from __future__ import annotations

import collections
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tts_protocol import Command

from harness import BrokerProc, Proc, tone_frames, wait_for
from peers import RawClient

pytestmark = pytest.mark.timeout(240)


def worker_count(raw: RawClient) -> int:
    return len(raw.status().workers)


def test_random_worker_kills_lose_nothing_and_duplicate_nothing(broker_factory, start_worker, ctx) -> None:
    """1,000 jobs while a driver kill -9's a random worker every second and starts a new one."""
    broker = broker_factory("--max-attempts", "10", "--no-cache")
    raw = RawClient(ctx, broker.frontend)
    workers = [start_worker(broker, "tone", {"latency_s": 0.03}, extra_args=["--single"]) for _ in range(4)]
    wait_for(lambda: worker_count(raw) == 4, 30, what="4 workers")
    texts = {f"chaos-{i}": f"Line {i} of the chaos run." for i in range(1000)}
    for job_id, text in texts.items():
        raw.submit(job_id, text)
    stop = threading.Event()
    kills = [0]

    def killer() -> None:
        rng = random.Random(7)
        while not stop.wait(1.0):
            victim = rng.randrange(len(workers))
            workers[victim].kill()
            kills[0] += 1
            workers[victim] = start_worker(broker, "tone", {"latency_s": 0.03}, extra_args=["--single"])

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    results: collections.Counter[str] = collections.Counter()
    errors = []
    deadline = time.monotonic() + 180
    try:
        while len(results) < len(texts) and time.monotonic() < deadline:
            if not raw.sock.poll(1000):
                continue
            msg = raw.recv()
            if msg.command is Command.RESULT:
                results[msg.body.job_id] += 1
                assert len(msg.payload) == 2 * tone_frames(texts[msg.body.job_id])
            elif msg.command is Command.ERROR:
                errors.append(msg.body)
    finally:
        stop.set()
        thread.join()
    assert not errors
    assert kills[0] >= 3, "the run ended before the chaos started"
    assert set(results) == set(texts), f"{len(texts) - len(results)} jobs never finished"
    # No worker still runs an attempt, and nothing the broker already sent may follow: a late duplicate RESULT
    # would arrive before the sentinel's PONGs. (`raw.status()` would skip a RESULT: ask another client.)
    observer = RawClient(ctx, broker.frontend)
    wait_for(lambda: all(w.busy == 0 for w in observer.status().workers), 30, what="every worker idle")
    raw.assert_quiet(ignore=(Command.ACCEPTED,))
    assert max(results.values()) == 1, "a job id got more than one result"


def test_broker_kill_9_twice_loses_no_accepted_job(broker_factory, start_worker, make_client, ctx) -> None:
    broker = broker_factory("--no-cache")
    for _ in range(2):
        start_worker(broker, "tone", {"latency_s": 0.02}, extra_args=["--single"])
    # A client that submits and vanishes: its jobs must still be done and fetchable later by id.
    orphan = RawClient(ctx, broker.frontend)
    orphan_ids = [f"orphan-{i}" for i in range(50)]
    for job_id in orphan_ids:
        orphan.submit(job_id, f"orphaned line {job_id}")
    for _ in orphan_ids:
        orphan.recv_until(Command.ACCEPTED, skip=(Command.RESULT,))
    orphan.close()
    client = make_client(broker.frontend, timeout_s=120)
    handles = [client.submit(f"Batch line {i}.", job_id=f"batch-{i}") for i in range(500)]
    for progress in (100, 250):
        wait_for(lambda n=progress: sum(h.done() for h in handles) >= n, 60, what=f"{progress} jobs done")
        assert not all(h.done() for h in handles), "the batch finished before the crash"
        broker.kill()
        broker.start()
    results = [h.result() for h in handles]
    assert [r.job_id for r in results] == [f"batch-{i}" for i in range(500)]
    assert all(len(r.pcm) == 2 * tone_frames(f"Batch line {i}.") for i, r in enumerate(results))
    late = RawClient(ctx, broker.frontend)
    for job_id in orphan_ids:
        late.submit(job_id, f"orphaned line {job_id}")
    fetched = {}
    while len(fetched) < len(orphan_ids):
        msg = late.recv_until(Command.RESULT, timeout_s=30)
        fetched[msg.body.job_id] = msg.payload
    assert set(fetched) == set(orphan_ids)


def test_frozen_worker_is_declared_dead_and_its_late_result_discarded(broker, start_worker, ctx) -> None:
    raw = RawClient(ctx, broker.frontend)
    frozen = start_worker(broker, "tone", {"latency_s": 2.0}, extra_args=["--single"])
    wait_for(lambda: worker_count(raw) == 1, 30)
    raw.submit("frozen-job", "Hello from a frozen worker.")
    wait_for(lambda: raw.status().workers[0].state == "busy", 10)
    frozen.signal(signal.SIGSTOP)
    t_stop = time.monotonic()
    spare = start_worker(broker, "tone", extra_args=["--single"])
    result = raw.recv_until(Command.RESULT, timeout_s=30)
    recovery_s = time.monotonic() - t_stop
    assert result.body.attempt == 2 and result.body.job_id == "frozen-job"
    assert recovery_s < 10
    frozen.signal(signal.SIGCONT)
    # The resumed worker finishes its old job; the broker no longer knows it and drops the answer. The
    # worker is told to re-register and comes back as a new worker.
    # Re-registering means it closed its old socket, the only one its late answer could go out on. The
    # observer asks for status: `raw.status()` would skip a RESULT, the very thing that must not arrive.
    observer = RawClient(ctx, broker.frontend)
    wait_for(lambda: worker_count(observer) == 2, 30, what="the resumed worker re-registers")
    raw.assert_quiet(ignore=(Command.ACCEPTED,))  # the late result never reaches the client
    assert spare.alive() and frozen.alive()


def test_hung_engine_is_cancelled_retried_failed_and_the_worker_replaced(broker_factory, start_worker, ctx) -> None:
    broker = broker_factory("--max-attempts", "2")
    raw = RawClient(ctx, broker.frontend)
    supervisor = start_worker(broker, "tone", {"hang_on": "HANG"}, concurrency=1,
                              extra_args=["--cancel-grace-s", "0.5"])
    wait_for(lambda: worker_count(raw) == 1, 30)
    first_worker = raw.status().workers[0].worker_id
    raw.submit("hangs", "Please HANG forever.", timeout_ms=1000)
    error = raw.recv_until(Command.ERROR, timeout_s=60)
    assert (error.body.job_id, error.body.code) == ("hangs", "max_attempts")
    # The stuck process was replaced by its supervisor: a new worker serves the next job.
    raw.submit("after-hang", "A normal line.")
    result = raw.recv_until(Command.RESULT, timeout_s=60)
    assert result.body.worker_id != first_worker
    assert supervisor.alive()


# ---- network partitions between test hosts in network namespaces -----------------------------------


def _netns_unavailable() -> str:
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "needs iproute2 (`ip`)"
    probe = f"ttsprobe{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` failed here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return ""


class Veth:
    """A worker host in its own network namespace, joined to this host by a veth pair on a private /30."""

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.ns = f"ttsw{tag}"
        self.host_if, self.ns_if = f"tb{tag}", f"tw{tag}"
        octet = random.randint(1, 250)
        self.host_ip, self.ns_ip = f"10.231.{octet}.1", f"10.231.{octet}.2"
        self._run("ip", "netns", "add", self.ns)
        self._run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        self._run("ip", "link", "set", self.ns_if, "netns", self.ns)
        self._run("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        self._run("ip", "link", "set", self.host_if, "up")
        self._run("ip", "netns", "exec", self.ns, "ip", "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if)
        self._run("ip", "netns", "exec", self.ns, "ip", "link", "set", self.ns_if, "up")
        self._run("ip", "netns", "exec", self.ns, "ip", "link", "set", "lo", "up")

    @staticmethod
    def _run(*args: str) -> None:
        subprocess.run(args, check=True, capture_output=True)

    def cut(self) -> None:
        self._run("ip", "link", "set", self.host_if, "down")

    def restore(self) -> None:
        self._run("ip", "link", "set", self.host_if, "up")

    def close(self) -> None:
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)


def test_cut_link_requeues_the_job_and_the_worker_rejoins_when_restored(tmp_path: Path, procs: list[Proc],
                                                                       ctx) -> None:
    reason = _netns_unavailable()
    if reason:
        pytest.skip(f"network-namespace partition test skipped: {reason}")
    veth = Veth()
    try:
        broker = BrokerProc(tmp_path, procs, [])
        broker.backend = "tcp://0.0.0.0:*"  # loopback for the local worker, the veth for the remote one
        broker.start()
        port = broker.backend.rsplit(":", 1)[1]  # the port it bound, from its ready file
        raw = RawClient(ctx, broker.frontend)
        remote_args = ["ip", "netns", "exec", veth.ns, sys.executable, "-m", "tts_worker", "--broker",
                       f"tcp://{veth.host_ip}:{port}", "--engine", "tone", "--engine-opt", "latency_s=3",
                       "--single", "--name", "remote", "--log-level", "DEBUG"]
        remote = Proc(remote_args, tmp_path / "remote-worker.log")
        procs.append(remote)
        wait_for(lambda: worker_count(raw) == 1, 30, what="the remote worker registers across the veth link")
        raw.submit("partitioned", "This job is cut off.")
        wait_for(lambda: raw.status().workers[0].state == "busy", 10)
        veth.cut()
        local = Proc([sys.executable, "-m", "tts_worker", "--broker", f"tcp://127.0.0.1:{port}", "--engine", "tone",
                      "--single", "--name", "local"], tmp_path / "local-worker.log")
        procs.append(local)
        result = raw.recv_until(Command.RESULT, timeout_s=40)
        assert result.body.attempt == 2
        names = {w.worker_id: w.name for w in raw.status().workers}
        assert names.get(result.body.worker_id) == "local"
        veth.restore()
        wait_for(lambda: any(w.name == "remote" for w in raw.status().workers), 60,
                 what="the remote worker re-registers after the link is restored")
    finally:
        veth.close()
