"""Models and voices: OpenAI names -> broker routing keys and speakers, and what the broker can serve now.

A model is an OpenAI model name mapped to a routing key (`tts-1` -> `piper`); a worker serves a routing key
when it is its engine name or `ENGINE:MODEL` (PROTOCOL.md section 5). A voice is a configured name mapped to
a speaker (`alloy` -> `default`); with pass-through on, any other name is handed to the engine as the
speaker, which accepts or rejects it (Piper: the voice's speakers; tone: anything).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any, Optional

from tts_protocol import routing
from tts_protocol.messages import StatusView, WorkerView

from tts_client.aio import AsyncTtsClient
from tts_gateway.errors import bad_request
from tts_gateway.settings import GatewaySettings

MAX_SPEAKER_CHARS = 256  # the protocol's limit on a speaker name


@dataclasses.dataclass(frozen=True, slots=True)
class ModelRoute:
    """Where one OpenAI model name goes."""

    name: str
    routing_key: Optional[str]  # None: the broker's default model

    @property
    def engine(self) -> Optional[str]:
        return self.routing_key.split(":", 1)[0] if self.routing_key else None


def serves(worker: WorkerView, routing_key: Optional[str]) -> bool:
    return routing.serves(worker.engine, worker.model, routing_key)


class Catalog:
    """Resolves request names, and lists models and voices from the settings plus the broker's status."""

    def __init__(self, settings: GatewaySettings, client: AsyncTtsClient) -> None:
        self.settings = settings
        self.client = client
        self.routes = {name: ModelRoute(name, key.strip() or None) for name, key in settings.models.items()}
        self._status: Optional[StatusView] = None
        self._status_at = 0.0
        self._lock = asyncio.Lock()

    def route(self, model: str) -> ModelRoute:
        try:
            return self.routes[model]
        except KeyError:
            known = ", ".join(sorted(self.routes)) or "none configured"
            raise bad_request(f"unknown model {model[:64]!r}; this gateway serves: {known}", param="model",
                              code="model_not_found") from None

    def speaker(self, voice: str) -> str:
        if not voice.strip():
            raise bad_request("voice is empty", param="voice")
        if len(voice) > MAX_SPEAKER_CHARS:
            raise bad_request(f"voice is {len(voice)} characters; the limit is {MAX_SPEAKER_CHARS}", param="voice")
        if voice in self.settings.voices:
            return self.settings.voices[voice]
        if self.settings.pass_through_voices:
            return voice
        known = ", ".join(sorted(self.settings.voices)) or "none configured"
        raise bad_request(f"unknown voice {voice[:64]!r}; choose one of: {known}", param="voice",
                          code="voice_not_found")

    def voice_settings(self, route: ModelRoute, speed: float) -> dict[str, Any]:
        """Engine voice settings for `speed`: length_scale = 1/speed where the engine has it; 1.0 sends none."""
        if speed == 1.0:
            return {}
        if route.engine in self.settings.speed_engines:
            return {"length_scale": 1.0 / speed}
        raise bad_request(f"model {route.name!r} (engine {route.engine or 'any'}) cannot change speed; "
                          "send speed 1.0", param="speed", code="unsupported_value")

    async def status(self) -> StatusView:
        """The broker's status, reused for status_cache_s; raises the client's errors."""
        async with self._lock:
            now = time.monotonic()
            if self._status is None or now - self._status_at >= self.settings.status_cache_s:
                self._status = await self.client.broker_status()
                self._status_at = time.monotonic()
            return self._status

    async def workers_for(self, route: ModelRoute) -> int:
        return sum(1 for w in (await self.status()).workers if serves(w, route.routing_key))

    def models(self, status: Optional[StatusView]) -> list[dict[str, Any]]:
        """OpenAI's model objects, plus the routing key and how many workers serve it now."""
        workers = status.workers if status is not None else []
        return [{"id": r.name, "object": "model", "created": 0, "owned_by": "tts-broker",
                 "routing_key": r.routing_key, "workers": sum(1 for w in workers if serves(w, r.routing_key))}
                for r in self.routes.values()]

    def voices(self, status: Optional[StatusView]) -> list[dict[str, Any]]:
        """Configured voices, then speakers some worker holds warm, each with the models that can use it."""
        workers = status.workers if status is not None else []
        listing: dict[str, dict[str, Any]] = {}
        for name, speaker in self.settings.voices.items():
            listing[name] = {"id": name, "object": "voice", "speaker": speaker, "source": "configured",
                             "models": sorted(self.routes)}
        if not self.settings.pass_through_voices:
            return list(listing.values())  # a warm speaker could not be asked for by name
        for route in self.routes.values():
            for worker in workers:
                if not serves(worker, route.routing_key):
                    continue
                for speaker in worker.warm:
                    entry = listing.setdefault(speaker, {"id": speaker, "object": "voice", "speaker": speaker,
                                                         "source": "warm", "models": []})
                    if entry["source"] == "warm" and route.name not in entry["models"]:
                        entry["models"].append(route.name)
        return list(listing.values())
