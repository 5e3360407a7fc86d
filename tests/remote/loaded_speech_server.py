"""A TEST speech server: OpenAI's `POST /v1/audio/speech` (pcm only) whose first audio slows as load grows.

It stands in for a GPU serving engine with continuous batching: every request is answered, and the time to
its first audio is `base_ms + per_request_ms x (requests already in flight)`. The audio is a deterministic
tone (pitch from the voice, length from the text and speed), streamed in `chunks` pieces `chunk_ms` apart.
It records, per request, the time from arrival to the first audio written, for tests and benchmarks.

Markers in `input`: `[400]` answers 400 (OpenAI's error body), `[500]` answers 500, the stall marker
(`--stall-marker`, default `[stall]`) streams one piece every 50 ms until the client hangs up.
Admin: GET /stats, POST /stats/reset, POST /admin/health?up=0|1 (/v1/models and /health answer 503 while down).

    python tests/remote/loaded_speech_server.py --listen 127.0.0.1:0 --ready-file F [--base-ms 40] ...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web

STALL_STEP_S = 0.05


class LoadedServer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.in_flight = 0
        self.healthy = True
        self.reset()

    def reset(self) -> None:
        self.ttfa_ms: list[float] = []
        self.requests = 0
        self.aborted = 0
        self.max_in_flight = 0
        self.streaming = 0  # requests that sent their first audio and are still going
        self.voices: list[str] = []  # the voice of each request, in arrival order

    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes([
            web.post("/v1/audio/speech", self.speech),
            web.get("/v1/models", self.models),
            web.get("/health", self.health),
            web.get("/stats", self.stats),
            web.post("/stats/reset", self.stats_reset),
            web.post("/admin/health", self.set_health),
        ])
        return app

    async def models(self, request: web.Request) -> web.Response:
        if not self.healthy:
            return web.json_response({"error": {"message": "down"}}, status=503)
        return web.json_response({"object": "list", "data": [{"id": "loaded-test", "object": "model"}]})

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok" if self.healthy else "down"}, status=200 if self.healthy else 503)

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({"ttfa_ms": self.ttfa_ms, "requests": self.requests, "aborted": self.aborted,
                                  "in_flight": self.in_flight, "max_in_flight": self.max_in_flight,
                                  "streaming": self.streaming, "voices": self.voices})

    async def stats_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({})

    async def set_health(self, request: web.Request) -> web.Response:
        self.healthy = request.query.get("up", "1") == "1"
        return web.json_response({"healthy": self.healthy})

    async def speech(self, request: web.Request) -> web.StreamResponse:
        arrived = time.perf_counter()
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "body is not JSON")
        problem = _check(body)
        if problem:
            return _error(400, problem)
        text: str = body["input"]
        if "[400]" in text:
            return _error(400, "the input holds the [400] marker")
        if "[500]" in text:
            return _error(500, "the input holds the [500] marker")
        self.requests += 1
        self.voices.append(body["voice"])
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        started_streaming = False
        try:
            args = self.args
            await asyncio.sleep((args.base_ms + args.per_request_ms * (self.in_flight - 1)) / 1000.0)
            response = web.StreamResponse(headers={"Content-Type": "audio/pcm"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            pieces = tone_pieces(body["voice"], text, float(body.get("speed", 1.0)), args)
            await response.write(pieces[0])
            self.ttfa_ms.append((time.perf_counter() - arrived) * 1000.0)
            self.streaming += 1
            started_streaming = True
            if args.stall_marker in text:
                while True:
                    await asyncio.sleep(STALL_STEP_S)
                    await response.write(pieces[0])
            for piece in pieces[1:]:
                await asyncio.sleep(args.chunk_ms / 1000.0)
                await response.write(piece)
            await response.write_eof()
            return response
        except (ConnectionError, asyncio.CancelledError):
            self.aborted += 1
            raise
        finally:
            self.in_flight -= 1
            if started_streaming:
                self.streaming -= 1


def _check(body: Any) -> str:
    if not isinstance(body, dict):
        return "body is not an object"
    for key in ("model", "input", "voice"):
        if not isinstance(body.get(key), str) or not body[key].strip():
            return f"{key} must be a non-empty string"
    if body.get("response_format", "mp3") != "pcm":
        return "this test server speaks response_format pcm only"
    speed = body.get("speed", 1.0)
    if not isinstance(speed, (int, float)) or not 0.25 <= speed <= 4.0:
        return "speed must be a number in 0.25..4.0"
    return ""


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": "invalid_request_error"}}, status=status)


def tone_pieces(voice: str, text: str, speed: float, args: argparse.Namespace) -> list[bytes]:
    """The deterministic audio for a request, cut into `args.chunks` pieces."""
    pitch = 200.0 + zlib.crc32(voice.encode()) % 400
    seconds = (0.05 + 0.002 * len(text)) / speed
    n = max(args.chunks, int(seconds * args.sample_rate))
    t = np.arange(n) / args.sample_rate
    pcm = np.round(0.3 * np.sin(2 * math.pi * pitch * t) * 32767).astype("<i2").tobytes()
    step = math.ceil(n / args.chunks) * 2
    return [pcm[i:i + step] for i in range(0, len(pcm), step)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--ready-file", type=Path, required=True)
    parser.add_argument("--base-ms", type=float, default=40.0)
    parser.add_argument("--per-request-ms", type=float, default=15.0)
    parser.add_argument("--chunks", type=int, default=4)
    parser.add_argument("--chunk-ms", type=float, default=20.0)
    parser.add_argument("--sample-rate", type=int, default=24000)
    parser.add_argument("--stall-marker", default="[stall]")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    if host != "127.0.0.1":
        parser.error("this test server listens on 127.0.0.1 only")

    async def serve() -> None:
        runner = web.AppRunner(LoadedServer(args).app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, int(port), backlog=1024)
        await site.start()
        bound = site._server.sockets[0].getsockname()  # type: ignore[union-attr]
        tmp = args.ready_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"url": f"http://{host}:{bound[1]}", "pid": os.getpid()}))
        tmp.replace(args.ready_file)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
