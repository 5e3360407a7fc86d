"""Queue bridges: jobs/s and added latency through each bridge vs the native client, same stack, same run.

One stack for the whole run: a tts-broker (--no-journal --no-cache: every job is synthesised), one
`tts-worker --engine tone --concurrency W` (latency 0, so the figures are the plumbing's), a throwaway
redis-server and RabbitMQ node (tests/bridge/bridgekit.py's, on free loopback ports). Rows:

- native: AsyncTtsClient straight to the broker, N jobs with K in flight;
- redis-streams: redis-py XADDs N entries, the bridge answers into a result stream;
- bullmq: the Python `bullmq` Queue.addBulk (the same Lua scripts as Node's queue.add), the bridge completes them;
- amqp: pika-style RPC with aio-pika: N messages with reply_to/correlation_id, the bridge replies;
- bullmq no-op: the Python `bullmq` Worker alone with a processor that does nothing (the BullMQ row's ceiling).

Throughput: from the first job handed over to the last answer seen (the bridge already consuming, max in
flight K). Latency: M jobs one at a time, hand-over to answer; p50 and p90, and p50 minus native's p50 (what
the bridge adds). Audio files are written to a temp folder by every bridge (that is part of its cost).

    python benchmarks/bench_bridges.py [--jobs 1000] [--inflight 64] [--latency-jobs 100] [--workers 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

from benchkit import ROOT, Stack, percentile, wait_file

sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "bridge")]

import aio_pika  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402
from bullmq import Queue, Worker  # noqa: E402

from tts_client import AsyncTtsClient  # noqa: E402

from bridgekit import RabbitServer, RedisServer  # noqa: E402

TEXT = "Bridge benchmark line {tag} {i}: a short sentence."


def start_bridge(stack: Stack, kind: str, *args: str, inflight: int) -> subprocess.Popen[bytes]:
    """`tts bridge KIND` on the stack's broker, writing its audio into the run's folder; once it is ready."""
    ready = stack.tmp / f"{kind}.json"
    proc = stack.spawn([sys.executable, "-m", "tts_client", "--broker", stack.frontend, "bridge", kind,
                        "--output-dir", str(stack.tmp / "audio" / kind), "--max-in-flight", str(inflight),
                        "--status-interval-s", "0", "--ready-file", str(ready), *args])
    wait_file(ready, proc, f"bridge {kind}")
    return proc


# ---- native ------------------------------------------------------------------------------------------------


async def native(front: str, jobs: int, inflight: int, latency_jobs: int) -> tuple[float, list[float]]:
    async with AsyncTtsClient(front) as client:
        await client.synthesize("warm up.")
        tag = secrets.token_hex(3)
        sem = asyncio.Semaphore(inflight)

        async def one(i: int) -> None:
            async with sem:
                await client.synthesize(TEXT.format(tag=tag, i=i))

        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(jobs)))
        rate = jobs / (time.perf_counter() - start)
        lat = []
        for i in range(latency_jobs):
            t0 = time.perf_counter()
            await client.synthesize(TEXT.format(tag=tag + "l", i=i))
            lat.append((time.perf_counter() - t0) * 1000)
        return rate, lat


# ---- Redis Streams -----------------------------------------------------------------------------------------


async def streams(stack: Stack, redis_url: str, jobs: int, inflight: int,
                  latency_jobs: int) -> tuple[float, list[float]]:
    tag = secrets.token_hex(3)
    stream, results = f"b{tag}:jobs", f"b{tag}:results"
    start_bridge(stack, "redis-streams", "--redis", redis_url, "--stream", stream, "--results", results,
                 inflight=inflight)
    r = aioredis.Redis.from_url(redis_url, decode_responses=True)
    last = "$"

    async def wait_results(count: int) -> list[tuple[str, dict]]:
        nonlocal last
        got: list[tuple[str, dict]] = []
        while len(got) < count:
            # redis-py types XREAD loosely: [(stream, [(entry id, fields), ...]), ...]
            reply: Any = await r.xread({results: last}, block=5000, count=1000)
            for _s, entries in reply or []:
                got.extend(entries)
                last = entries[-1][0]
        return got

    start = time.perf_counter()
    pipe = r.pipeline(transaction=False)
    for i in range(jobs):
        pipe.xadd(stream, {"text": TEXT.format(tag=tag, i=i), "id": str(i)})
    await pipe.execute()
    await wait_results(jobs)
    rate = jobs / (time.perf_counter() - start)
    lat = []
    for i in range(latency_jobs):
        t0 = time.perf_counter()
        await r.xadd(stream, {"text": TEXT.format(tag=tag + "l", i=i), "id": f"l{i}"})
        await wait_results(1)
        lat.append((time.perf_counter() - t0) * 1000)
    await r.aclose()
    return rate, lat


# ---- BullMQ ------------------------------------------------------------------------------------------------


async def bullmq(stack: Stack, redis_url: str, jobs: int, inflight: int,
                 latency_jobs: int) -> tuple[float, list[float]]:
    tag = secrets.token_hex(3)
    name = f"bench-{tag}"
    start_bridge(stack, "bullmq", "--redis", redis_url, "--queue", name, inflight=inflight)
    queue = Queue(name, {"connection": redis_url})
    r = aioredis.Redis.from_url(redis_url, decode_responses=True)
    completed = f"bull:{name}:completed"

    async def wait_completed(count: int) -> None:
        while await r.zcard(completed) < count:
            await asyncio.sleep(0.002)

    start = time.perf_counter()
    for at in range(0, jobs, 500):
        await queue.addBulk([{"name": "speak", "data": {"text": TEXT.format(tag=tag, i=i), "id": str(i)},
                              "opts": {"jobId": f"{tag}-{i}"}} for i in range(at, min(jobs, at + 500))])
    await wait_completed(jobs)
    rate = jobs / (time.perf_counter() - start)
    lat = []
    for i in range(latency_jobs):
        t0 = time.perf_counter()
        await queue.add("speak", {"text": TEXT.format(tag=tag + "l", i=i)}, {"jobId": f"{tag}-l{i}"})
        await wait_completed(jobs + i + 1)
        lat.append((time.perf_counter() - t0) * 1000)
    await queue.close()
    await r.aclose()
    return rate, lat


async def bullmq_noop(redis_url: str, jobs: int, inflight: int) -> float:
    """The ceiling the BullMQ bridge works under: the Python `bullmq` Worker itself with a no-op processor."""
    name = f"noop-{secrets.token_hex(3)}"
    queue = Queue(name, {"connection": redis_url})
    done = asyncio.Event()
    count = 0

    async def noop(job: object, token: object) -> dict:
        nonlocal count
        count += 1
        if count == jobs:
            done.set()
        return {}

    worker = Worker(name, noop, {"connection": redis_url, "concurrency": inflight})
    start = time.perf_counter()
    for at in range(0, jobs, 500):
        await queue.addBulk([{"name": "x", "data": {"i": i}} for i in range(at, min(jobs, at + 500))])
    await done.wait()
    rate = jobs / (time.perf_counter() - start)
    await worker.close()
    await queue.close()
    return rate


# ---- AMQP --------------------------------------------------------------------------------------------------


async def amqp(stack: Stack, url: str, jobs: int, inflight: int, latency_jobs: int) -> tuple[float, list[float]]:
    tag = secrets.token_hex(3)
    name = f"bench.{tag}"
    connection = await aio_pika.connect(url)
    channel = await connection.channel()
    await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
    replies = await channel.declare_queue(exclusive=True)
    start_bridge(stack, "amqp", "--url", url, "--queue", name, inflight=inflight)
    got: asyncio.Queue[str] = asyncio.Queue()

    async def on_reply(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        got.put_nowait(message.correlation_id or "")

    await replies.consume(on_reply, no_ack=True)

    async def send(key: str, text: str) -> None:
        await channel.default_exchange.publish(
            aio_pika.Message(json.dumps({"text": text, "id": key}).encode(), message_id=key, correlation_id=key,
                             reply_to=replies.name), routing_key=name)

    start = time.perf_counter()
    for i in range(jobs):
        await send(f"{tag}-{i}", TEXT.format(tag=tag, i=i))
    for _ in range(jobs):
        await got.get()
    rate = jobs / (time.perf_counter() - start)
    lat = []
    for i in range(latency_jobs):
        t0 = time.perf_counter()
        await send(f"{tag}-l{i}", TEXT.format(tag=tag + "l", i=i))
        await got.get()
        lat.append((time.perf_counter() - t0) * 1000)
    await connection.close()
    return rate, lat


async def run(args: argparse.Namespace, stack: Stack, redis: RedisServer, rabbit: RabbitServer) -> None:
    rows: list[tuple[str, float, list[float]]] = []
    rate, lat = await native(stack.frontend, args.jobs, args.inflight, args.latency_jobs)
    rows.append(("native client", rate, lat))
    cases: list[tuple[str, Callable[[], Awaitable[tuple[float, list[float]]]]]] = [
        ("redis-streams", lambda: streams(stack, redis.url, args.jobs, args.inflight, args.latency_jobs)),
        ("bullmq", lambda: bullmq(stack, redis.url, args.jobs, args.inflight, args.latency_jobs)),
        ("amqp", lambda: amqp(stack, rabbit.url, args.jobs, args.inflight, args.latency_jobs)),
    ]
    for name, case in cases:
        rate, lat = await case()
        rows.append((name, rate, lat))
    noop_rate = await bullmq_noop(redis.url, args.jobs, args.inflight)
    base_rate, base_lat = rows[0][1], statistics.median(rows[0][2])
    print(f"{args.jobs} jobs ({args.inflight} in flight), {args.latency_jobs} one at a time; tone worker "
          f"--concurrency {args.workers}; broker --no-journal --no-cache")
    print(f"{'path':16} {'jobs/s':>8} {'x native':>9} {'p50 ms':>8} {'p90 ms':>8} {'added p50 ms':>13}")
    for name, rate, lat in rows:
        p50 = statistics.median(lat)
        p90 = percentile(lat, 0.9)
        print(f"{name:16} {rate:8.0f} {rate / base_rate:9.2f} {p50:8.2f} {p90:8.2f} {p50 - base_lat:13.2f}")
    print(f"{'bullmq no-op':16} {noop_rate:8.0f} {noop_rate / base_rate:9.2f}    (the Python bullmq Worker alone, "
          "no-op processor: the BullMQ bridge's ceiling)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--inflight", type=int, default=64)
    parser.add_argument("--latency-jobs", type=int, default=100)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-bridges-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "redis").mkdir()
        (tmp / "rabbitmq").mkdir()
        subprocess.run(["bash", str(ROOT / "scripts" / "install-queue-servers.sh")], check=True)
        redis = RedisServer(tmp / "redis").start()
        rabbit = RabbitServer(tmp / "rabbitmq")
        stack = None
        try:
            rabbit.start()
            stack = Stack(tmp)
            stack.start_broker()
            stack.start_worker("tone", concurrency=args.workers)
            asyncio.run(run(args, stack, redis, rabbit))
        finally:
            if stack is not None:
                stack.close(grace_s=15)
            rabbit.stop()
            redis.stop()


if __name__ == "__main__":
    main()
