"""OpenAIHttpEngine: forwards each job to an OpenAI-compatible `POST /v1/audio/speech` server.

For GPU serving engines with continuous batching (vllm-omni, SGLang-Omni) and small servers (Kokoro-FastAPI,
fish-speech's api_server): the server synthesizes; this worker adds what it lacks (the broker's queue,
priorities, fairness, retries, failover) and holds work back so its time to first audio stays under a target
(admission.py). See docs/engines/openai-http.md.

Options (`--engine-opt key=value`):
- url: the server's API base, e.g. http://127.0.0.1:8091/v1 (required; http or https)
- model: the `model` sent with each request (required); the broker routes `openai-http:MODEL` here
- api_key_file: a file whose first line is the bearer token (none: no Authorization header)
- ttfa_target_ms (500), min_concurrency (1), max_concurrency (32): the adaptive capacity's target and
  bounds; min = max gives a fixed capacity
- sample_rate (24000): the rate of the server's `pcm` (OpenAI's is 24 kHz; ours: the engine's own)
- voice (alloy): sent when the job names no speaker
- connect_timeout_s (5), read_timeout_s (60): connecting, and the longest silence in a response
- health_interval_s (2): how often the server is probed while up (0.5 s while down)

Each job: text -> `input`, the job's speaker -> `voice`, voice setting `speed` (or 1/`length_scale`) ->
`speed`, `instructions` passed on; `response_format` pcm, `stream` true. Outcomes: a 4xx is the job's fault
(engine_error, not retried) except 401/403/404/405/408/429 (the worker's set-up or the server's state:
retried on another worker); 5xx, refused connections, resets, a response cut short and timeouts are the
engine's (retried).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

import numpy as np

from tts_protocol.errors import ErrorCode

from tts_worker.engines.base import (
    AudioChunk,
    EngineError,
    EngineInfo,
    EngineLoadError,
    SynthesisCancelled,
    SynthesisRequest,
)
from tts_worker.engines.openai_http.admission import AdaptiveLimit, TtfaWindow
from tts_worker.engines.openai_http.pcm_body import PcmBody, WavMismatch
from tts_worker.engines.openai_http.transport import (
    Cancelled,
    HttpStatusError,
    Timeouts,
    Transport,
    TransportError,
)
from tts_worker.engines.options import OptionReader, VoiceReader

log = logging.getLogger(__name__)

WARM_VOICES = 32
DOWN_PROBE_S = 0.5
PROBE_TIMEOUT_S = 5.0
# Not the job's fault: a wrong key (401/403), a server without the endpoint or model (404/405), one that
# asks to come back later (408/429). Another worker, or this one later, may succeed.
_RETRY_4XX = {401, 403, 404, 405, 408, 429}
_CONGESTION = {429, 503}


class OpenAIHttpEngine:
    """Engine plugin: speech from an OpenAI-compatible HTTP server, with admission by time to first audio."""

    name = "openai-http"
    licence = "that of the remote server's model"
    OPTIONS = {"url", "model", "api_key_file", "ttfa_target_ms", "min_concurrency", "max_concurrency",
               "sample_rate", "voice", "connect_timeout_s", "read_timeout_s", "health_interval_s"}

    def __init__(self, *, options: Mapping[str, Any], settings: Any = None) -> None:
        reader = OptionReader(self.name, options, self.OPTIONS)
        self.url = _base_url(reader.str("url"))
        model = reader.str("model")
        if not model or not model.strip():
            raise EngineLoadError(f"engine {self.name}: option model=NAME is required (the server's model name)")
        self.model = model.strip()
        key_file = reader.str("api_key_file")
        self.api_key = _read_key(Path(key_file)) if key_file else None
        self.ttfa_target_ms = reader.float("ttfa_target_ms", 500.0, min=1.0, max=600_000.0)
        self.min_concurrency = reader.int("min_concurrency", 1, min=1, max=1024)
        self.max_concurrency = reader.int("max_concurrency", max(32, self.min_concurrency), min=1, max=1024)
        if self.min_concurrency > self.max_concurrency:
            raise EngineLoadError(f"engine {self.name}: min_concurrency {self.min_concurrency} is above "
                                  f"max_concurrency {self.max_concurrency}")
        self.sample_rate = reader.int("sample_rate", 24_000, min=1000, max=384_000)
        self.default_voice = reader.str("voice", "alloy") or "alloy"
        self.timeouts = Timeouts(connect_s=reader.float("connect_timeout_s", 5.0, min=0.1, max=600.0),
                                 read_s=reader.float("read_timeout_s", 60.0, min=0.1, max=3600.0))
        self.health_interval_s = reader.float("health_interval_s", 2.0, min=0.1, max=3600.0)
        self.admission = AdaptiveLimit(target_ms=self.ttfa_target_ms, min_limit=self.min_concurrency,
                                       max_limit=self.max_concurrency)
        self.ttfa = TtfaWindow()
        self._lock = threading.Lock()
        self._in_flight = 0
        self._warm: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._warm_generation = 0
        self._counts = collections.Counter[str]()
        self._health_error: Optional[str] = "not probed yet"
        self._recheck = threading.Event()
        self._closing = threading.Event()
        self._transport: Optional[Transport] = None
        self._prober: Optional[threading.Thread] = None

    # ---- life cycle --------------------------------------------------------------------------------

    def load(self) -> EngineInfo:
        self._transport = Transport(base_url=self.url, api_key=self.api_key, timeouts=self.timeouts,
                                    pool_size=self.max_concurrency)
        self._probe_once()
        if self._health_error is not None:
            log.warning("openai-http: %s is down for now (%s); taking no job until it answers", self.url,
                        self._health_error)
        self._prober = threading.Thread(target=self._probe_loop, name="openai-http-health", daemon=True)
        self._prober.start()
        return EngineInfo(engine=self.name, model=self.model, sample_rate=self.sample_rate, device="remote",
                          licence=self.licence, capacity=self.max_concurrency,
                          extra={"url": self.url, "ttfa_target_ms": self.ttfa_target_ms})

    def close(self) -> None:
        self._closing.set()
        self._recheck.set()
        if self._prober is not None:
            self._prober.join(PROBE_TIMEOUT_S * 2 + 2.0)
        if self._transport is not None:
            self._transport.close()

    # ---- admission and health ----------------------------------------------------------------------

    def capacity_now(self) -> int:
        """Jobs the broker may lease this worker now: the adaptive limit, or 0 while the server is down."""
        if self._health_error is not None:
            return 0
        return self.admission.limit

    @property
    def healthy(self) -> bool:
        return self._health_error is None

    def _probe_once(self) -> None:
        assert self._transport is not None
        why = self._transport.probe(timeout_s=PROBE_TIMEOUT_S)
        if why != self._health_error:
            if why is None:
                log.info("openai-http: %s answers: taking jobs", self.url)
            elif self._health_error is None:
                log.warning("openai-http: %s is down (%s): taking no new job", self.url, why)
        self._health_error = why

    def _probe_loop(self) -> None:
        while not self._closing.is_set():
            self._recheck.wait(self.health_interval_s if self._health_error is None else DOWN_PROBE_S)
            self._recheck.clear()
            if self._closing.is_set():
                return
            self._probe_once()

    def _server_trouble(self, why: str) -> None:
        """A request could not reach the server: stop taking jobs until a probe says it is back."""
        if self._health_error is None:
            log.warning("openai-http: %s: %s; taking no new job until it answers a probe", self.url, why)
        self._health_error = why
        self._recheck.set()

    # ---- jobs --------------------------------------------------------------------------------------

    def synthesize(self, request: SynthesisRequest, cancel: threading.Event) -> Iterator[AudioChunk]:
        assert self._transport is not None, "engine not loaded"
        body = self._body(request)
        with self._lock:
            self._in_flight += 1
            in_flight = self._in_flight
            self._note_voice(body["voice"])
        started = time.monotonic()
        first = True
        pcm = PcmBody(self.sample_rate)
        total = 0
        try:
            for data in self._transport.stream(body, cancel=cancel, total_s=request.timeout_s or None):
                samples = pcm.feed(data)
                if not samples:
                    continue
                if first:
                    first = False
                    ttfa_ms = (time.monotonic() - started) * 1000.0
                    self.ttfa.add(ttfa_ms)
                    self.admission.observe(ttfa_ms, started_at=started, in_flight_at_start=in_flight)
                total += len(samples)
                yield AudioChunk(np.frombuffer(samples, dtype="<i2"), self.sample_rate)
        except Cancelled:
            raise SynthesisCancelled() from None
        except WavMismatch as exc:
            self._count("errors_format")
            raise EngineError(f"{self.url}: {exc}", code=ErrorCode.ENGINE_ERROR, retryable=True) from None
        except HttpStatusError as exc:
            raise self._status_error(exc, started) from None
        except TransportError as exc:
            self._count("errors_transport")
            self._server_trouble(str(exc))
            raise EngineError(f"{self.url}: {exc}", code=ErrorCode.ENGINE_ERROR, retryable=True) from None
        finally:
            with self._lock:
                self._in_flight -= 1
        if total == 0:
            self._count("errors_no_audio")
            raise EngineError("the server returned no audio for this text")
        self._count("jobs_ok")

    def _body(self, request: SynthesisRequest) -> dict[str, Any]:
        voice = VoiceReader(self.name, request.voice)
        speed = voice.optional_float("speed", min=0.25, max=4.0)
        length_scale = voice.optional_float("length_scale", min=0.25, max=4.0)
        if speed is None and length_scale is not None:
            speed = 1.0 / length_scale
        body: dict[str, Any] = {"model": self.model, "input": request.text,
                                "voice": request.speaker or self.default_voice, "response_format": "pcm",
                                "stream": True}
        if speed is not None and speed != 1.0:
            body["speed"] = round(speed, 6)
        instructions = voice.str("instructions")
        if instructions:
            body["instructions"] = instructions
        return body

    def _status_error(self, exc: HttpStatusError, started: float) -> EngineError:
        status = exc.status
        if status in _CONGESTION:
            self.admission.congested(started_at=started)
        if 400 <= status < 500 and status not in _RETRY_4XX:
            self._count("errors_4xx")
            return EngineError(f"the server refused the job: {exc}", code=ErrorCode.ENGINE_ERROR, retryable=False)
        self._count("errors_5xx" if status >= 500 else "errors_4xx")
        if status in (401, 403):
            self._server_trouble(f"HTTP {status}: is api_key_file right?")
        return EngineError(f"{self.url}: {exc}", code=ErrorCode.ENGINE_ERROR, retryable=True)

    @property
    def warm_generation(self) -> int:
        """Changes whenever the set of warm voices does (the worker then sends a heartbeat at once)."""
        return self._warm_generation

    def _note_voice(self, voice: str) -> None:
        if voice not in self._warm:
            self._warm_generation += 1  # a new voice: the broker should know before the next job is placed
        self._warm[voice] = None
        self._warm.move_to_end(voice)
        while len(self._warm) > WARM_VOICES:
            self._warm.popitem(last=False)

    def _count(self, key: str) -> None:
        with self._lock:
            self._counts[key] += 1

    def deterministic(self, request: SynthesisRequest) -> bool:
        return False  # the remote model may sample

    def stats(self) -> dict[str, Any]:
        p50, p90 = self.ttfa.percentile(50), self.ttfa.percentile(90)
        with self._lock:
            figures: dict[str, Any] = {
                "health": "up" if self._health_error is None else "down",
                "capacity": self.capacity_now(),
                "in_flight": self._in_flight,
                "ttfa_target_ms": self.ttfa_target_ms,
                "ttfa_samples": self.ttfa.count,
                "limit_cuts": self.admission.cuts,
                # the voices this server was sent lately: the broker's sticky routing prefers this worker
                # for them (the server's prefix and speaker caches reward it)
                "warm": list(reversed(self._warm)),
                **dict(self._counts),
            }
        if self._health_error is not None:
            figures["health_error"] = self._health_error[:200]
        if p50 is not None and p90 is not None:
            figures["ttfa_p50_ms"], figures["ttfa_p90_ms"] = round(p50, 1), round(p90, 1)
        return figures


def _base_url(url: Optional[str]) -> str:
    if not url:
        raise EngineLoadError("engine openai-http: option url=http://HOST:PORT/v1 is required")
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EngineLoadError(f"engine openai-http: url={url[:100]!r} is not an http(s) URL with a host")
    if parts.query or parts.fragment:
        raise EngineLoadError("engine openai-http: url must not carry a query or fragment")
    return url.strip().rstrip("/")


def _read_key(path: Path) -> str:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise EngineLoadError(f"engine openai-http: cannot read api_key_file {path}: {exc.strerror or exc}") from None
    keys = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not keys:
        raise EngineLoadError(f"engine openai-http: api_key_file {path} holds no key")
    return keys[0]
