"""Fleet scale: one broker, thousands of simulated workers and clients on real sockets, cost per event.

Simulated peers are plain DEALER sockets, many per process (at most PER_PROCESS each, so a process stays
within its descriptor limit), speaking TTSP: workers send READY, heartbeat at the broker's default interval
(1 s, staggered) and answer every JOB at once with a small result; clients submit at a fixed total rate,
round-robin over all clients. The broker is a real `tts-broker` process; its CPU and RSS are read with psutil.

Two tables:
- workers: for each fleet size, heartbeats alone for a window (broker CPU as % of one core, CPU per
  heartbeat), then jobs flowing from 100 clients (CPU per job, dispatch latency = SUBMIT sent until the
  worker holds the JOB, p50/p99), and the broker's RSS.
- clients: 100 workers, each client count connected (every client sent a PING), then jobs flowing from all
  of them round-robin: the same figures.
The goal is a flat cost per event: the same microseconds per heartbeat and per job at every size.

    python benchmarks/bench_fleet.py [--sizes 100,1000,5000] [--clients 1000,10000] [--window 5] [--rate 400]
"""

from __future__ import annotations

import argparse
import heapq
import multiprocessing as mp
import os
import resource
import shutil
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Optional

import psutil
import zmq

from tts_protocol import Command, Side, decode, encode
from tts_protocol.messages import (
    BrokerStatusReply,
    Heartbeat,
    JobAssignment,
    Ready,
    Request,
    StatusRequest,
    Submit,
    WorkerResult,
)

from benchkit import Processes, broker_command, percentile, wait_file, wait_until

PER_PROCESS = 3000  # sockets per simulated-peer process: two descriptors each (TCP + mailbox)
HEARTBEAT_S = 1.0  # the broker's default heartbeat_interval_s
REPLY = b"\x00" * 256


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def context(sockets: int) -> zmq.Context:
    ctx = zmq.Context()
    ctx.set(zmq.MAX_SOCKETS, sockets + 64)
    return ctx


# ---- simulated workers -------------------------------------------------------------------------------


def worker_fleet(back: str, count: int, tag: str, conn: Connection) -> None:
    """`count` worker DEALERs in this process: READY, heartbeats every interval, instant results.

    Sockets are opened a batch per turn while the earlier ones already heartbeat (opening thousands takes
    seconds, longer than the broker's liveness); a worker the broker forgot sends READY again, as real ones do.
    """
    raise_fd_limit()
    ctx = context(count)
    socks: list[zmq.Socket] = []
    readies: list[list[bytes]] = []
    poller = zmq.Poller()
    heartbeat = encode(Command.W_HEARTBEAT, Heartbeat())
    due: list[tuple[float, int]] = []  # (next heartbeat, socket index)
    sent_heartbeats = 0
    latencies: list[float] = []
    while True:
        if conn.poll():
            command = conn.recv()
            if command == "stop":
                break
            if command == "stats":
                conn.send((sent_heartbeats, latencies))
                latencies = []
                continue
        now = time.monotonic()
        for _ in range(min(50, count - len(socks))):
            i = len(socks)
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.ROUTING_ID, f"w-{tag}-{i}".encode())
            sock.connect(back)
            ready = encode(Command.W_READY, Ready(worker_id=f"w-{tag}-{i}", engine="echo", pid=os.getpid(),
                                                  name=f"{tag}-{i}"))
            sock.send_multipart(ready)
            socks.append(sock)
            readies.append(ready)
            poller.register(sock, zmq.POLLIN)
            heapq.heappush(due, (now + HEARTBEAT_S, i))
        for sock, _ in poller.poll(5):
            while True:
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                command_byte = frames[0][-1]
                if command_byte == Command.B_DISCONNECT:
                    sock.send_multipart(readies[socks.index(sock)])
                    continue
                if command_byte != Command.B_JOB:
                    continue
                msg = decode(frames, side=Side.WORKER, to_broker=False)
                job = msg.body
                assert isinstance(job, JobAssignment)
                latencies.append(time.monotonic() - float(job.text.partition(":")[2]))
                result = WorkerResult(job_id=job.job_id, attempt=job.attempt, sample_rate=16000)
                sock.send_multipart(encode(Command.W_RESULT, result, REPLY))
        now = time.monotonic()
        while due and due[0][0] <= now:
            when, i = heapq.heappop(due)
            socks[i].send_multipart(heartbeat)
            sent_heartbeats += 1
            heapq.heappush(due, (when + HEARTBEAT_S, i))
    for sock in socks:
        sock.close(0)
    ctx.term()


# ---- simulated clients -------------------------------------------------------------------------------


def client_fleet(front: str, count: int, tag: str, conn: Connection) -> None:
    """`count` client DEALERs: each says PING once; then, on command, submit at a rate, round-robin."""
    raise_fd_limit()
    ctx = context(count)
    socks = []
    ping = encode(Command.PING, Request(req_id="hello"))
    for _ in range(count):
        sock: zmq.Socket = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(front)
        sock.send_multipart(ping)
        socks.append(sock)
    poller = zmq.Poller()
    for sock in socks:
        poller.register(sock, zmq.POLLIN)
    pongs = results = 0
    submitting: Optional[tuple[float, float, int]] = None  # (start, rate, jobs)
    submitted = 0
    while True:
        if conn.poll():
            command = conn.recv()
            if command == "stop":
                break
            if command == "stats":
                conn.send((pongs, submitted, results))
                continue
            submitting, submitted = (time.monotonic(), command[1], command[2]), 0
        for sock, _ in poller.poll(2):
            while True:
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                last = frames[0][-1]
                pongs += last == Command.PONG
                results += last == Command.RESULT
        if submitting is not None:
            start, rate, jobs = submitting
            target = min(jobs, int((time.monotonic() - start) * rate))
            while submitted < target:
                sock = socks[submitted % count]
                sock.send_multipart(encode(Command.SUBMIT, Submit(job_id=f"{tag}-{submitted}-{time.monotonic_ns()}",
                                                                  text=f"t:{time.monotonic()!r}")))
                submitted += 1
    for sock in socks:
        sock.close(0)
    ctx.term()


class Fleet:
    """Peer processes of one kind, PER_PROCESS sockets each."""

    def __init__(self, target: Any, endpoint: str, count: int, kind: str) -> None:
        self.procs: list[tuple[mp.Process, Connection]] = []
        for n, start in enumerate(range(0, count, PER_PROCESS)):
            parent, child = mp.Pipe()
            proc = mp.Process(target=target, args=(endpoint, min(PER_PROCESS, count - start), f"{kind}{n}", child),
                              daemon=True)
            proc.start()
            self.procs.append((proc, parent))

    def ask(self, command: Any) -> list[Any]:
        for _, conn in self.procs:
            conn.send(command)
        return [conn.recv() for _, conn in self.procs] if command == "stats" else []

    def stop(self) -> None:
        for _, conn in self.procs:
            conn.send("stop")
        for proc, _ in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()


# ---- the broker --------------------------------------------------------------------------------------


class BrokerUnderTest:
    def __init__(self, profile: str = "") -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
        ready = self.tmp / "ready.json"
        args = broker_command(ready, self.tmp / "state", journal=True, cache=True, log_level="WARNING")
        if profile:
            args[1:1] = ["-m", "cProfile", "-o", profile]  # python -m cProfile -o PROFILE -m tts_broker ...
        # Liveness 30 heartbeats instead of 3: on a loaded machine the simulated fleet (thousands of sockets in
        # a few processes) may stall for seconds, and a worker declared dead would re-register in a loop. The
        # heartbeat interval, so the cost measured, stays the default.
        env = {**os.environ, "TTS_MAX_CLIENT_QUEUED": "0", "TTS_HEARTBEAT_LIVENESS": "30"}
        self.procs = Processes(self.tmp / "broker.log", env=env)
        self.popen = self.procs.spawn(args, preexec_fn=raise_fd_limit)
        try:
            info = wait_file(ready, self.popen, "tts-broker", 30)
        except SystemExit:
            print((self.tmp / "broker.log").read_text(), file=sys.stderr)
            raise
        self.front, self.back = info["frontend"], info["backend"]
        self.ps = psutil.Process(self.popen.pid)

    def cpu_s(self) -> float:
        times = self.ps.cpu_times()
        return times.user + times.system

    def rss_mb(self) -> float:
        return self.ps.memory_info().rss / 2**20

    def workers(self) -> int:
        sock: zmq.Socket = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.front)
        # The count only: a page of thousands of workers is a large reply (and holds only part of them).
        sock.send_multipart(encode(Command.BROKER_STATUS, StatusRequest(req_id="s", workers_limit=0)))
        try:
            if not sock.poll(10_000):
                return -1
            msg = decode(sock.recv_multipart(), side=Side.CLIENT, to_broker=False)
            assert isinstance(msg.body, BrokerStatusReply)
            return int(msg.body.status.worker_count)
        finally:
            sock.close(0)

    def stop(self) -> None:
        self.procs.close(grace_s=20)
        shutil.rmtree(self.tmp, ignore_errors=True)


def heartbeats(broker: BrokerUnderTest, workers: Fleet, window_s: float) -> tuple[float, float]:
    """(broker CPU % of one core, µs of broker CPU per heartbeat) with only heartbeats flowing."""
    hb0 = sum(s[0] for s in workers.ask("stats"))
    cpu0, t0 = broker.cpu_s(), time.monotonic()
    time.sleep(window_s)
    cpu1, t1 = broker.cpu_s(), time.monotonic()
    hb1 = sum(s[0] for s in workers.ask("stats"))
    spent = cpu1 - cpu0
    return 100 * spent / (t1 - t0), 1e6 * spent / max(hb1 - hb0, 1)


def jobs_flowing(broker: BrokerUnderTest, workers: Fleet, clients: Fleet, rate: float, window_s: float,
                 idle_cpu_pct: float) -> dict[str, float]:
    """Jobs at `rate` for `window_s`: broker CPU per job (the heartbeat share taken off), dispatch latency."""
    jobs = int(rate * window_s)
    before = sum(s[2] for s in clients.ask("stats"))
    workers.ask("stats")  # reset the latency lists
    cpu0, t0 = broker.cpu_s(), time.monotonic()
    clients.ask(("submit", rate / len(clients.procs), jobs // len(clients.procs)))
    wanted = before + (jobs // len(clients.procs)) * len(clients.procs)
    wait_until("results", lambda: sum(s[2] for s in clients.ask("stats")) >= wanted, 60 + 4 * window_s, every_s=0.2)
    cpu1, t1 = broker.cpu_s(), time.monotonic()
    lat = [x for s in workers.ask("stats") for x in s[1]]
    spent = cpu1 - cpu0 - idle_cpu_pct / 100 * (t1 - t0)
    return {"us_per_job": 1e6 * max(spent, 0.0) / max(len(lat), 1), "p50_ms": 1000 * percentile(lat, 0.5),
            "p99_ms": 1000 * percentile(lat, 0.99), "jobs": len(lat)}


def run_workers(size: int, args: argparse.Namespace) -> dict[str, float]:
    broker = BrokerUnderTest(f"{args.profile}.workers-{size}" if args.profile else "")
    workers = Fleet(worker_fleet, broker.back, size, "w")
    clients = Fleet(client_fleet, broker.front, 100, "c")
    try:
        # Every 2 s: a status view of thousands of workers is a large reply, not something to ask for in a loop.
        wait_until(f"{size} workers registered", lambda: broker.workers() >= size, 300, every_s=2.0)
        time.sleep(HEARTBEAT_S * 2)  # every worker heartbeating, registration spikes over
        cpu_pct, us_hb = heartbeats(broker, workers, args.window)
        flow = jobs_flowing(broker, workers, clients, args.rate, args.window, cpu_pct)
        return {"size": size, "hb_cpu_pct": cpu_pct, "us_per_hb": us_hb, **flow, "rss_mb": broker.rss_mb()}
    finally:
        clients.stop()
        workers.stop()
        broker.stop()


def run_clients(size: int, args: argparse.Namespace) -> dict[str, float]:
    broker = BrokerUnderTest(f"{args.profile}.clients-{size}" if args.profile else "")
    workers = Fleet(worker_fleet, broker.back, 100, "w")
    clients = Fleet(client_fleet, broker.front, size, "c")
    try:
        wait_until("100 workers registered", lambda: broker.workers() >= 100, 300, every_s=1.0)
        wait_until(f"{size} clients connected", lambda: sum(s[0] for s in clients.ask("stats")) >= size, 300,
                   every_s=0.2)
        time.sleep(HEARTBEAT_S)
        cpu_pct, _ = heartbeats(broker, workers, min(args.window, 3.0))
        flow = jobs_flowing(broker, workers, clients, args.rate, args.window, cpu_pct)
        return {"size": size, "idle_cpu_pct": cpu_pct, **flow, "rss_mb": broker.rss_mb()}
    finally:
        clients.stop()
        workers.stop()
        broker.stop()


# ---- the core alone: cost per event without sockets, processes or a loaded machine in the way ----------


def core_costs(size: int, repeat: int = 2000) -> dict[str, float]:
    """µs of CPU the sans-IO core spends per heartbeat, per timer tick and per job with `size` workers."""
    from tts_protocol.codec import Message

    from tts_broker.core import BrokerCore
    from tts_broker.settings import BrokerSettings

    core = BrokerCore(BrokerSettings(_env_file=None, heartbeat_liveness=30))  # type: ignore[call-arg]
    ids = [f"w-{i}".encode() for i in range(size)]
    for identity in ids:
        core.on_worker(identity, None, Message(Command.W_READY, Ready(worker_id=identity.decode(), engine="echo")), 0.0)
    core.tick(0.0)
    core.outbox.now.clear()
    beat = Message(Command.W_HEARTBEAT, Heartbeat(stats={"cpu_percent": 1.0}))
    t0 = time.process_time()
    for i in range(repeat):
        core.on_worker(ids[i % size], None, beat, 1.0 + i * 1e-6)
    per_hb = (time.process_time() - t0) / repeat
    now = 2.0
    core.tick(now)  # broker heartbeats out: once per interval, one message per worker by design
    core.outbox.now.clear()
    t0 = time.process_time()
    for i in range(repeat):
        core.expire(now + i * 1e-6)
    per_tick = (time.process_time() - t0) / repeat
    t0 = time.process_time()
    for i in range(repeat):
        core.on_client(b"c", None, Message(Command.SUBMIT, Submit(job_id=f"j{i}", text="bench")), now, 0.0)
        core.dispatch(now)
        _, identity, _, body, _ = core.outbox.now[-1]
        worker = core.workers.get(identity)
        assert worker is not None
        core.on_worker(identity, None, Message(Command.W_RESULT, WorkerResult(job_id=f"j{i}", attempt=1,
                                                                              sample_rate=16000), REPLY), now)
        core.outbox.now.clear()
    per_job = (time.process_time() - t0) / repeat
    return {"size": size, "us_hb": per_hb * 1e6, "us_tick": per_tick * 1e6, "us_job": per_job * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,1000,5000", help="worker fleet sizes (comma-separated)")
    parser.add_argument("--clients", default="1000,10000", help="client counts (comma-separated; empty: none)")
    parser.add_argument("--window", type=float, default=5.0, help="seconds measured per phase")
    parser.add_argument("--rate", type=float, default=400.0, help="jobs per second while jobs flow")
    parser.add_argument("--profile", default="", help="run the broker under cProfile, writing PROFILE.workers-N etc.")
    parser.add_argument("--core", default="100,1000,5000,10000",
                        help="worker counts for the in-process core figures (empty: skip)")
    args = parser.parse_args()
    raise_fd_limit()
    if args.core:
        print("\ncore alone (no sockets): µs of CPU per event")
        print("workers  µs/heartbeat  µs/timer tick  µs/job (submit, dispatch, result)")
        for size in [int(s) for s in args.core.split(",") if s]:
            r = core_costs(size)
            print(f"{r['size']:7d}  {r['us_hb']:12.1f}  {r['us_tick']:13.1f}  {r['us_job']:8.1f}", flush=True)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, heartbeat {HEARTBEAT_S}s, "
          f"window {args.window}s, {args.rate:g} jobs/s")
    print("\nworkers  hb CPU %core  µs/heartbeat  µs/job  dispatch p50 ms  p99 ms  broker RSS MB")
    for size in [int(s) for s in args.sizes.split(",") if s]:
        r = run_workers(size, args)
        print(f"{r['size']:7d}  {r['hb_cpu_pct']:12.1f}  {r['us_per_hb']:12.1f}  {r['us_per_job']:6.0f}  "
              f"{r['p50_ms']:15.2f}  {r['p99_ms']:6.2f}  {r['rss_mb']:13.1f}", flush=True)
    if args.clients:
        print("\nclients  idle CPU %core  µs/job  dispatch p50 ms  p99 ms  broker RSS MB   (100 workers)")
        for size in [int(s) for s in args.clients.split(",") if s]:
            r = run_clients(size, args)
            print(f"{r['size']:7d}  {r['idle_cpu_pct']:14.1f}  {r['us_per_job']:6.0f}  {r['p50_ms']:15.2f}  "
                  f"{r['p99_ms']:6.2f}  {r['rss_mb']:13.1f}", flush=True)


if __name__ == "__main__":
    main()
