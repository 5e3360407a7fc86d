"""Piper throughput: model-resident workers through the real broker vs one process per line.

Starts a broker (no journal, no result cache) on random loopback ports, then measures
  1. lines/s with 1 worker process (`tts-worker --engine piper`, one onnxruntime thread),
  2. lines/s with 2 worker processes,
  3. the seed's "old system": a fresh Python process per line (import + load voice + synthesize + write WAV
     + exit), one at a time and two at a time,
and prints the figures and ratios. Targets: 2 workers >= 1.7x one worker; workers >= 10x the old system for
short lines. Numbers depend on the machine and on what else runs on it: report them with that caveat.

    .venv/bin/python benchmarks/bench_piper.py [--lines 60] [--old-lines 8]
"""

from __future__ import annotations

import argparse
import json
import secrets
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import zmq

from tts_protocol import Command, Side, body_for, decode, encode
from tts_protocol.messages import Submit

from benchkit import ROOT, Stack, wait_until

LINES = [
    "First message", "Second message", "Hello, world!", "Where did you put the keys?",
    "I told you we should have left earlier.", "Nobody answers the door after midnight.",
    "Keep your voice down.", "That is not what I meant.", "We need to talk about the plan.",
    "The train leaves at seven.", "Are you coming with us?", "I will be right back.",
]
OLD_SYSTEM = """
import sys, threading, wave
from tts_worker.engines.base import SynthesisRequest
from tts_worker.engines.piper import PiperEngine
engine = PiperEngine(options={})
info = engine.load()
chunks = list(engine.synthesize(SynthesisRequest(job_id="old", text=sys.argv[1]), threading.Event()))
with wave.open(sys.argv[2], "wb") as f:
    f.setnchannels(1); f.setsampwidth(2); f.setframerate(info.sample_rate)
    for c in chunks:
        f.writeframes(c.to_bytes())
"""


def line(i: int) -> str:
    return f"{LINES[i % len(LINES)]}"


class Bench:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.stack = Stack(tmp, cwd=ROOT, log_name="broker.log")
        self.ctx = zmq.Context()
        self.client = self.ctx.socket(zmq.DEALER)
        self.client.linger = 0
        self._req = 0

    def start_broker(self) -> None:
        self.stack.start_broker(timeout_s=30)
        self.client.connect(self.stack.frontend)

    def start_workers(self, n: int) -> subprocess.Popen[bytes]:
        proc = self.stack.start_worker("piper", concurrency=n, name=f"bench{n}", log=self.tmp / f"workers-{n}.log")
        wait_until(f"{n} workers", lambda: self.worker_count() >= n, 60, every_s=0.2)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        self.stack.stop(proc)
        deadline = time.monotonic() + 15
        while self.worker_count() and time.monotonic() < deadline:
            time.sleep(0.1)

    def request(self, command: Command, reply: Command, **fields: object) -> object:
        self._req += 1
        req_id = f"bench-{self._req}"
        self.client.send_multipart(encode(command, body_for(command, {"req_id": req_id, **fields})))
        while True:
            if not self.client.poll(10_000):
                raise SystemExit(f"no {reply.name} from the broker")
            msg = decode(self.client.recv_multipart(), side=Side.CLIENT, to_broker=False)
            if msg.command is reply and getattr(msg.body, "req_id", None) == req_id:
                return msg.body

    def worker_count(self) -> int:
        body = self.request(Command.BROKER_STATUS, Command.BROKER_STATUS_REPLY)
        return len(body.status.workers)  # type: ignore[attr-defined]

    def run_jobs(self, n: int, tag: str) -> float:
        """Submit n lines at once; seconds until every RESULT is back."""
        pending = set()
        started = time.monotonic()
        for i in range(n):
            job_id = f"{tag}-{i}-{secrets.token_hex(3)}"
            pending.add(job_id)
            self.client.send_multipart(encode(Command.SUBMIT, Submit(job_id=job_id, text=line(i))))
        while pending:
            if not self.client.poll(120_000):
                raise SystemExit(f"{len(pending)} jobs never finished")
            msg = decode(self.client.recv_multipart(), side=Side.CLIENT, to_broker=False)
            if msg.command is Command.ERROR:
                raise SystemExit(f"job failed: {msg.body}")
            if msg.command is Command.RESULT:
                pending.discard(msg.body.job_id)  # type: ignore[attr-defined]
        return time.monotonic() - started

    def close(self) -> None:
        self.stack.close(grace_s=0)
        self.client.close(0)
        self.ctx.term()


def old_system(n: int, parallel: int, tmp: Path) -> float:
    """Seconds for n lines with a fresh process per line, `parallel` processes at a time."""

    def one(i: int) -> None:
        subprocess.run([sys.executable, "-c", OLD_SYSTEM, line(i), str(tmp / f"old-{parallel}-{i}.wav")],
                       check=True, cwd=str(ROOT), capture_output=True, timeout=120)

    started = time.monotonic()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(one, range(n)))
    return time.monotonic() - started


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=60, help="lines per worker measurement")
    parser.add_argument("--old-lines", type=int, default=8, help="lines per old-system measurement")
    args = parser.parse_args(argv)
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-piper-") as tmp_name:
        tmp = Path(tmp_name)
        bench = Bench(tmp)
        try:
            bench.start_broker()
            for n in (1, 2):
                proc = bench.start_workers(n)
                bench.run_jobs(2 * n, f"warm{n}")
                seconds = bench.run_jobs(args.lines, f"w{n}")
                figures[f"workers_{n}"] = args.lines / seconds
                print(f"{n} worker process(es): {args.lines} lines in {seconds:.2f} s = "
                      f"{figures[f'workers_{n}']:.2f} lines/s", flush=True)
                bench.stop(proc)
        finally:
            bench.close()
        for parallel in (1, 2):
            seconds = old_system(args.old_lines, parallel, tmp)
            figures[f"old_{parallel}"] = args.old_lines / seconds
            print(f"old system, process per line, {parallel} at a time: {args.old_lines} lines in {seconds:.2f} s "
                  f"= {figures[f'old_{parallel}']:.2f} lines/s", flush=True)
    scaling = figures["workers_2"] / figures["workers_1"]
    print(f"scaling 2 workers / 1 worker: {scaling:.2f}x (target >= 1.7x)")
    for n in (1, 2):
        ratio = figures[f"workers_{n}"] / figures[f"old_{n}"]
        print(f"{n} worker(s) vs old system at the same parallelism: {ratio:.1f}x (target >= 10x)")
    print(json.dumps({k: round(v, 3) for k, v in figures.items()}))


if __name__ == "__main__":
    main()
