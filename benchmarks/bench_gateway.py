"""HTTP gateway overhead: requests/s and time to first audio byte, gateway vs the native AsyncTtsClient.

One run, one stack: a tts-broker (no journal, no result cache, so every request is synthesised), one
`tts-worker --engine tone --concurrency 4` supervisor (latency 0) and one `tts gateway`. The native rows use
AsyncTtsClient straight to the broker; the gateway rows use httpx to POST /v1/audio/speech (the same HTTP an
OpenAI SDK sends), and a minimal keep-alive HTTP/1.1 client that costs the load generator less CPU than
httpx does. Every request has its own text. Throughput keeps N requests in flight; time to first audio
is measured one request at a time (native: first streamed chunk; gateway: first body byte of a pcm stream).

    python benchmarks/bench_gateway.py [--requests 600] [--inflight 32] [--latency-requests 150]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Awaitable, Callable

import httpx

from tts_client import AsyncTtsClient

from benchkit import Stack, percentile, wait_file

TEXT = "Benchmark line {i}: a short sentence. And a second one."


def start_stack(tmp: Path, workers: int) -> tuple[Stack, str]:
    """Broker, tone workers and gateway as child processes; returns them and the gateway's URL."""
    env = {**os.environ, "TTS_GATEWAY_MODELS": "tts-1=tone", "TTS_GATEWAY_API_KEYS": "bench",
           "TTS_GATEWAY_MAX_CONCURRENT_REQUESTS": "1024"}
    stack = Stack(tmp, env=env)
    stack.start_broker()
    stack.start_worker("tone", concurrency=workers)
    gateway = stack.spawn([sys.executable, "-m", "tts_client", "--broker", stack.frontend, "gateway", "--listen",
                           "127.0.0.1:0", "--ready-file", str(tmp / "gateway.json")])
    return stack, wait_file(tmp / "gateway.json", gateway, "gateway")["url"]


class RawHttp:
    """A minimal keep-alive HTTP/1.1 client (one connection per lane), so the load generator is not what limits
    the gateway rows: httpx spends more CPU per request than the gateway does on this two-core machine."""

    def __init__(self, url: str) -> None:
        host, _, port = url.removeprefix("http://").partition(":")
        self.host, self.port = host, int(port)
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post_speech(self, body: dict) -> tuple[int, int]:
        """(status, audio bytes) of one POST /v1/audio/speech."""
        conn = self.idle.pop() if self.idle else await asyncio.open_connection(self.host, self.port)
        reader, writer = conn
        data = json.dumps(body).encode()
        writer.write(b"POST /v1/audio/speech HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer bench\r\n"
                     b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(data), data))
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
        status = int(head.split(" ", 2)[1])
        size = 0
        if "transfer-encoding: chunked" in head:
            while True:
                length = int((await reader.readline()).split(b";")[0], 16)
                await reader.readexactly(length + 2)
                size += length
                if length == 0:
                    break
        else:
            length = int(head.split("content-length:", 1)[1].split("\r\n", 1)[0])
            size = len(await reader.readexactly(length))
        self.idle.append(conn)
        return status, size

    async def close(self) -> None:
        for _reader, writer in self.idle:
            writer.close()


async def throughput(call: Callable[[int], Awaitable[int]], requests: int, inflight: int) -> float:
    """Requests per second with `inflight` kept going; every call must return audio bytes."""
    counter = iter(range(requests))

    async def lane() -> None:
        for i in counter:
            if await call(i) <= 0:
                raise SystemExit(f"request {i} returned no audio")

    started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(inflight)))
    return requests / (time.perf_counter() - started)


async def first_audio_ms(call: Callable[[int], Awaitable[float]], requests: int, offset: int) -> list[float]:
    return [await call(offset + i) for i in range(requests)]


def summary(samples: list[float]) -> str:
    return f"median {statistics.median(samples):6.2f} ms  p95 {percentile(samples, 0.95):6.2f} ms"


async def run(args: argparse.Namespace, url: str, front: str) -> None:
    headers = {"Authorization": "Bearer bench"}
    limits = httpx.Limits(max_connections=args.inflight, max_keepalive_connections=args.inflight)
    async with AsyncTtsClient(front, timeout_s=120) as native, \
            httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=120) as http:
        async def native_whole(i: int) -> int:
            return len((await native.synthesize(TEXT.format(i=i), model="tone")).pcm)

        async def gateway_whole(i: int, fmt: str = "pcm") -> int:
            response = await http.post("/v1/audio/speech", json={"model": "tts-1", "voice": "alloy",
                                                                 "input": TEXT.format(i=i), "response_format": fmt})
            if response.status_code != 200:
                raise SystemExit(f"gateway answered {response.status_code}: {response.text}")
            return len(response.content)

        async def gateway_mp3(i: int) -> int:
            return await gateway_whole(i, "mp3")

        raw = RawHttp(url)

        async def raw_whole(i: int, fmt: str = "pcm") -> int:
            status, size = await raw.post_speech({"model": "tts-1", "voice": "alloy", "input": TEXT.format(i=i),
                                                  "response_format": fmt})
            if status != 200:
                raise SystemExit(f"gateway answered {status}")
            return size

        async def raw_mp3(i: int) -> int:
            return await raw_whole(i, "mp3")

        async def native_first(i: int) -> float:
            started = time.perf_counter()
            stream = await native.stream(TEXT.format(i=i), model="tone")
            first = None
            async for _chunk in stream:
                if first is None:
                    first = (time.perf_counter() - started) * 1000
            return float(first or 0.0)

        async def gateway_first(i: int) -> float:
            started = time.perf_counter()
            first = None
            async with http.stream("POST", "/v1/audio/speech", json={
                    "model": "tts-1", "voice": "alloy", "input": TEXT.format(i=i), "response_format": "pcm"}) as r:
                r.raise_for_status()
                async for piece in r.aiter_raw():
                    if first is None and piece:
                        first = (time.perf_counter() - started) * 1000
            return float(first or 0.0)

        # Warm up both paths (imports, connections, the workers' first jobs).
        await throughput(native_whole, 50, 8)
        await throughput(gateway_whole, 50, 8)
        n, c = args.requests, args.inflight
        rows = {
            "native AsyncTtsClient": await throughput(lambda i: native_whole(10_000 + i), n, c),
            "gateway pcm, httpx": await throughput(lambda i: gateway_whole(20_000 + i), n, c),
            "gateway mp3, httpx": await throughput(lambda i: gateway_mp3(30_000 + i), n, c),
            "gateway pcm, raw HTTP/1.1": await throughput(lambda i: raw_whole(60_000 + i), n, c),
            "gateway mp3, raw HTTP/1.1": await throughput(lambda i: raw_mp3(70_000 + i), n, c),
        }
        await raw.close()
        native_ttfb = await first_audio_ms(native_first, args.latency_requests, 40_000)
        gateway_ttfb = await first_audio_ms(gateway_first, args.latency_requests, 50_000)

    base = rows["native AsyncTtsClient"]
    print(f"\nthroughput: {n} requests, {c} in flight, tone engine ({args.workers} worker processes)")
    for name, rate in rows.items():
        print(f"  {name:27s} {rate:8.1f} req/s   x{rate / base:5.2f} of native")
    print(f"\ntime to first audio byte: {args.latency_requests} requests, one at a time")
    print(f"  native stream()             {summary(native_ttfb)}")
    print(f"  gateway pcm stream, httpx   {summary(gateway_ttfb)}   "
          f"x{statistics.median(gateway_ttfb) / statistics.median(native_ttfb):5.2f} of native (median)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--inflight", type=int, default=32)
    parser.add_argument("--latency-requests", type=int, default=150)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        stack, url = start_stack(Path(tmp), args.workers)
        try:
            asyncio.run(run(args, url, stack.frontend))
        finally:
            stack.close()


if __name__ == "__main__":
    main()
