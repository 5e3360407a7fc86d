"""Broker overhead: tts-broker against a minimal pyzmq ROUTER load-balancing broker, same run, same machine.

Both brokers get 4 echo workers (separate processes) that answer every job at once with a small payload, and
one client that keeps N jobs in flight. What differs is only the broker (and the protocol it needs), so the
ratio is the price of leases, heartbeats, validation, priorities and status. A third row runs tts-broker with
4 real `tts-worker --engine tone` processes (latency 0) for the end-to-end figure. Latency rows use one job
in flight. The CURVE pair runs the TTSP echo case again with CURVE on both ports (docs/security.md): every
peer keyed, the broker's ZAP handler checking key folders, User-Id read per message.

    python benchmarks/bench_broker.py [--jobs 5000] [--inflight 100] [--latency-jobs 1000]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import secrets
import shutil
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Callable

import psutil
import zmq

from tts_protocol import Command, Side, decode, encode
from tts_protocol.curve import CurveKeys, generate
from tts_protocol.messages import Heartbeat, JobAssignment, Ready, Submit, WorkerResult

from benchkit import Stack, percentile

REPLY = b"\x00" * 1024
KEYS = Path(tempfile.mkdtemp(prefix="bench-keys-"))


def make_keys() -> None:
    """The broker's key pair, and the client's and worker's, whose public halves alone go in its allowlists (a
    broker refuses an allowlist folder that holds a secret key)."""
    generate("broker", KEYS / "broker")
    for name, folder in (("bench-client", "clients"), ("bench-worker", "workers")):
        public, _secret = generate(name, KEYS / "peers")
        (KEYS / folder).mkdir()
        shutil.copy(public, KEYS / folder / public.name)


def keys_for(name: str) -> CurveKeys:
    return CurveKeys.from_files(KEYS / "peers" / f"{name}.key_secret", KEYS / "broker" / "broker.key")


# ---- the baseline: the smallest useful LRU broker --------------------------------------------------


def minimal_broker(endpoints: mp.Queue) -> None:
    ctx = zmq.Context()
    fe, be = ctx.socket(zmq.ROUTER), ctx.socket(zmq.ROUTER)
    fe.bind("tcp://127.0.0.1:*")
    be.bind("tcp://127.0.0.1:*")
    endpoints.put((fe.getsockopt_string(zmq.LAST_ENDPOINT), be.getsockopt_string(zmq.LAST_ENDPOINT)))
    idle: list[bytes] = []
    waiting: list[list[bytes]] = []
    poller = zmq.Poller()
    poller.register(fe, zmq.POLLIN)
    poller.register(be, zmq.POLLIN)
    while True:
        events = dict(poller.poll())
        if be in events:
            while True:
                try:
                    frames = be.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                worker, body = frames[0], frames[1:]
                if body[0] != b"READY":
                    fe.send_multipart(body)  # [client id, reply]
                if waiting:
                    be.send_multipart([worker, *waiting.pop(0)])
                else:
                    idle.append(worker)
        if fe in events:
            while True:
                try:
                    frames = fe.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if idle:
                    be.send_multipart([idle.pop(0), *frames])
                else:
                    waiting.append(frames)


def minimal_worker(back: str) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.connect(back)
    sock.send(b"READY")
    while True:
        client, _request = sock.recv_multipart()
        sock.send_multipart([client, REPLY])


def minimal_client_call(sock: zmq.Socket, i: int) -> None:
    sock.send(str(i).encode())


def minimal_client_done(sock: zmq.Socket) -> bool:
    sock.recv()
    return True


# ---- tts-broker with protocol-speaking echo workers -------------------------------------------------


def ttsp_echo_worker(back: str, curve: bool = False) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.ROUTING_ID, b"w-" + secrets.token_hex(8).encode())
    if curve:
        keys_for("bench-worker").apply(sock)
    sock.connect(back)
    sock.send_multipart(encode(Command.W_READY, Ready(worker_id=f"echo-{os.getpid()}", engine="echo")))
    heartbeat = encode(Command.W_HEARTBEAT, Heartbeat())
    next_hb = time.monotonic() + 1.0
    while True:
        if sock.poll(200):
            msg = decode(sock.recv_multipart(), side=Side.WORKER, to_broker=False)
            if msg.command is Command.B_JOB:
                job = msg.body
                assert isinstance(job, JobAssignment)
                result = WorkerResult(job_id=job.job_id, attempt=job.attempt, sample_rate=16000)
                sock.send_multipart(encode(Command.W_RESULT, result, REPLY))
        if time.monotonic() >= next_hb:
            sock.send_multipart(heartbeat)
            next_hb = time.monotonic() + 1.0


def ttsp_call(sock: zmq.Socket, i: int) -> None:
    sock.send_multipart(encode(Command.SUBMIT, Submit(job_id=f"b{time.monotonic_ns()}-{i}", text="bench")))


def ttsp_done(sock: zmq.Socket) -> bool:
    frames = sock.recv_multipart()
    return frames[0][-1] == Command.RESULT


# ---- driver -----------------------------------------------------------------------------------------


def client_socket(front: str, curve: bool) -> zmq.Socket:
    sock: zmq.Socket = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if curve:
        keys_for("bench-client").apply(sock)
    sock.connect(front)
    return sock


def drive(front: str, call: Callable[[zmq.Socket, int], None], done: Callable[[zmq.Socket], bool],
          jobs: int, inflight: int, curve: bool = False) -> tuple[float, list[float]]:
    """Keep `inflight` jobs going until `jobs` finished; returns (jobs/s, per-job latencies of a 1-deep run)."""
    sock = client_socket(front, curve)
    # warm-up: wait until the path works end to end
    deadline = time.monotonic() + 30
    while True:
        call(sock, -1)
        if sock.poll(1000):
            while not done(sock):
                pass
            break
        if time.monotonic() > deadline:
            raise RuntimeError("no reply during warm-up")
    sent = finished = 0
    start = time.perf_counter()
    while finished < jobs:
        while sent < jobs and sent - finished < inflight:
            call(sock, sent)
            sent += 1
        if done(sock):
            finished += 1
    rate = jobs / (time.perf_counter() - start)
    return rate, []


def latencies(front: str, call: Callable[[zmq.Socket, int], None], done: Callable[[zmq.Socket], bool],
              n: int, curve: bool = False) -> list[float]:
    sock = client_socket(front, curve)
    out = []
    for i in range(n + 20):
        t0 = time.perf_counter()
        call(sock, i)
        while not done(sock):
            pass
        if i >= 20:
            out.append((time.perf_counter() - t0) * 1000)
    sock.close()
    return out


def cpu_s(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def run_case(name: str, start: Callable[[], tuple[list, str, str]], call, done, args, curve: bool = False) -> dict:
    """Run one case; the start function returns the broker first in its process list."""
    procs, front, back = start()
    try:
        before = cpu_s(procs[0].pid)
        rate, _ = drive(front, call, done, args.jobs, args.inflight, curve)
        broker_us = (cpu_s(procs[0].pid) - before) / args.jobs * 1e6  # includes the warm-up job: negligible
        lat = latencies(front, call, done, args.latency_jobs, curve)
    finally:
        for p in procs:
            p.terminate() if hasattr(p, "terminate") else None
        for p in procs:
            p.join(5) if hasattr(p, "join") else p.wait(5)
    row = {"case": name, "jobs_per_s": rate, "p50_ms": statistics.median(lat), "p99_ms": percentile(lat, 0.99),
           "broker_us": broker_us}
    print(f"{name:<40} {rate:>7.0f} jobs/s   p50 {row['p50_ms']:.3f} ms   p99 {row['p99_ms']:.3f} ms   "
          f"broker CPU {broker_us:.0f} us/job", flush=True)
    return row


def start_minimal() -> tuple[list, str, str]:
    endpoints: mp.Queue = mp.Queue()
    broker = mp.Process(target=minimal_broker, args=(endpoints,), daemon=True)
    broker.start()
    front, back = endpoints.get(timeout=30)
    workers = [mp.Process(target=minimal_worker, args=(back,), daemon=True) for _ in range(4)]
    for p in workers:
        p.start()
    return [broker, *workers], front, back


def _tts_broker(*, journal: bool = False, curve: bool = False, http: bool = False) -> Stack:
    """tts-broker on free ports, its state and log in a folder of its own (kept for a look afterwards)."""
    extra = ["--http", "127.0.0.1:0"] if http else []
    if curve:
        extra += ["--curve-secret", str(KEYS / "broker" / "broker.key_secret"), "--client-keys",
                  str(KEYS / "clients"), "--worker-keys", str(KEYS / "workers")]
    stack = Stack(Path(tempfile.mkdtemp(prefix="bench-broker-")))
    info = stack.start_broker(journal=journal, log_level="WARNING", extra=extra, timeout_s=30)
    if info.get("http"):  # a process of its own: a thread here would slow the load generator, not the broker
        mp.Process(target=_scrape, args=(info["http"],), daemon=True).start()
    return stack


def _scrape(base: str) -> None:
    """What a dashboard (1/s) and a busy Prometheus (every 5 s would do; here 2/s) ask of `--http`, until the
    broker is gone."""
    while True:
        for path in ("api/dashboard", "metrics", "metrics"):
            try:
                with urllib.request.urlopen(base + path, timeout=5) as reply:
                    reply.read()
            except OSError:
                return
        time.sleep(0.5)


def start_ttsp_echo(journal: bool = False, curve: bool = False, http: bool = False) -> tuple[list, str, str]:
    stack = _tts_broker(journal=journal, curve=curve, http=http)
    workers = [mp.Process(target=ttsp_echo_worker, args=(stack.backend, curve), daemon=True) for _ in range(4)]
    for p in workers:
        p.start()
    return [stack.broker, *workers], stack.frontend, stack.backend


def start_ttsp_echo_journal() -> tuple[list, str, str]:
    return start_ttsp_echo(journal=True)


def start_tone_workers(journal: bool = False) -> tuple[list, str, str]:
    stack = _tts_broker(journal=journal)
    worker = stack.start_worker("tone", concurrency=4)
    return [stack.broker, worker], stack.frontend, stack.backend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--inflight", type=int, default=100)
    parser.add_argument("--latency-jobs", type=int, default=1000)
    parser.add_argument("--no-tone", action="store_true", help="skip the real tone-worker row")
    parser.add_argument("--curve-only", action="store_true", help="run only the CURVE off/on pair")
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores; {args.jobs} jobs, {args.inflight} in flight; 1 KB replies; 4 workers")
    make_keys()
    if args.curve_only:
        curve_pair(args)
        return
    base = run_case("minimal ROUTER broker + echo", start_minimal, minimal_client_call, minimal_client_done, args)
    ours = run_case("tts-broker + TTSP echo workers", start_ttsp_echo, ttsp_call, ttsp_done, args)
    print(f"throughput ratio tts-broker / minimal: {ours['jobs_per_s'] / base['jobs_per_s']:.2f} (target >= 0.60)")
    print(f"broker CPU per job, minimal / tts-broker: {base['broker_us'] / ours['broker_us']:.2f} (2 shared cores: "
          "the peers' CPU limits the throughput ratio too)")
    print(f"added p50 latency, one job in flight: {ours['p50_ms'] - base['p50_ms']:+.3f} ms (target < 0.5 ms)")
    journaled = run_case("tts-broker (journal on) + TTSP echo", start_ttsp_echo_journal, ttsp_call, ttsp_done, args)
    print(f"journal on / off: {journaled['jobs_per_s'] / ours['jobs_per_s']:.2f} (target >= 0.70)")
    served = run_case("tts-broker (--http, scraped) + TTSP echo", lambda: start_ttsp_echo(http=True), ttsp_call,
                      ttsp_done, args)
    print(f"--http on (dashboard + metrics scraped) / off: {served['jobs_per_s'] / ours['jobs_per_s']:.2f} "
          f"(target >= 0.90); p50 {served['p50_ms'] - ours['p50_ms']:+.3f} ms")
    curve_pair(args, off=ours)
    if not args.no_tone:
        off = run_case("tts-broker + 4 tone workers", start_tone_workers, ttsp_call, ttsp_done, args)
        on = run_case("tts-broker (journal on) + 4 tone workers",
                      lambda: start_tone_workers(journal=True), ttsp_call, ttsp_done, args)
        print(f"journal on / off with tone workers: {on['jobs_per_s'] / off['jobs_per_s']:.2f} (target >= 0.70)")


def curve_pair(args: argparse.Namespace, off: dict | None = None) -> None:
    """tts-broker with TTSP echo workers, CURVE off then on, same run."""
    if off is None:
        off = run_case("tts-broker + TTSP echo (CURVE off)", start_ttsp_echo, ttsp_call, ttsp_done, args)
    on = run_case("tts-broker + TTSP echo (CURVE on)", lambda: start_ttsp_echo(curve=True), ttsp_call, ttsp_done,
                  args, curve=True)
    print(f"CURVE on / off: {on['jobs_per_s'] / off['jobs_per_s']:.2f} x jobs/s, "
          f"p50 {on['p50_ms'] - off['p50_ms']:+.3f} ms, broker CPU {on['broker_us'] / off['broker_us']:.2f} x per job")


if __name__ == "__main__":
    main()
