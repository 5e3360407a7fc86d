"""Gateway settings: environment (TTS_GATEWAY_*) and .env, overridden by `tts gateway` flags."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# OpenAI's built-in voice names; each maps to the engine's default speaker unless configured otherwise.
OPENAI_VOICES = ("alloy", "ash", "ballad", "cedar", "coral", "echo", "fable", "marin", "nova", "onyx", "sage",
                 "shimmer", "verse")
DEFAULT_MODELS = {"tts-1": "piper", "tts-1-hd": "fish-speech"}
DEFAULT_VOICES = {name: "default" for name in OPENAI_VOICES}


def _parse_mapping(value: Any, what: str) -> Any:
    """A JSON object, or `key=value` pairs separated by commas (`tts-1=piper,tts-1-hd=fish-speech`)."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{what}: not valid JSON: {exc}") from exc
    mapping: dict[str, str] = {}
    for pair in text.split(","):
        key, sep, target = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{what}: expected NAME=VALUE pairs separated by commas, got {pair.strip()!r}")
        mapping[key.strip()] = target.strip()
    return mapping


def _parse_list(value: Any) -> Any:
    """A JSON list, or names separated by commas."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        return json.loads(text)
    return [part.strip() for part in text.split(",") if part.strip()]


class GatewaySettings(BaseSettings):
    """How the HTTP gateway listens, which broker it uses, and what it accepts."""

    model_config = SettingsConfigDict(env_prefix="TTS_GATEWAY_", env_file=".env", extra="ignore",
                                      populate_by_name=True)

    listen: str = Field(default="127.0.0.1:8000", description="HOST:PORT the HTTP server binds (port 0: any).")
    broker: Optional[str] = Field(
        default=None, description="Broker frontend endpoint; unset = the client's (TTS_BROKER_URL).")
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Bearer tokens accepted on /v1/* (comma separated); none here and no key file = no auth.",
        json_schema_extra={"secret": True})
    api_key_file: Optional[Path] = Field(
        default=None, description="File of accepted bearer tokens, one per line (# comments); read at start.")
    models: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=lambda: dict(DEFAULT_MODELS),
        description="OpenAI model name -> broker routing key (ENGINE or ENGINE:MODEL; empty = broker default).")
    voices: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=lambda: dict(DEFAULT_VOICES),
        description="OpenAI voice name -> engine speaker.")
    pass_through_voices: bool = Field(
        default=True, description="A voice not in `voices` goes to the engine as the speaker name (else 400).")
    speed_engines: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["piper", "tone"],
        description="Engines whose voice settings take length_scale; `speed` maps to length_scale = 1/speed.")
    pcm_sample_rate: int = Field(
        default=0, ge=0, le=192_000,
        description="Resample response_format=pcm to this rate (OpenAI's is 24000); 0 = the engine's own rate.")
    max_input_chars: int = Field(default=4096, ge=1, le=1_000_000, description="Longest `input` accepted.")
    max_body_bytes: Optional[int] = Field(
        default=None, ge=1024,
        description="Largest request body; larger ones get 413 before they are read (default: 6 bytes per "
                    "max_input_chars, JSON's worst case, plus 64 KiB).")
    request_timeout_s: float = Field(
        default=120.0, gt=0, description="Whole-request limit: the job's deadline and the client's timeout.")
    max_concurrent_requests: int = Field(
        default=64, ge=1, description="Speech requests in progress at once; more are answered 429.")
    require_worker: bool = Field(
        default=True, description="Answer 503 at once when the broker has no worker for the model.")
    status_cache_s: float = Field(
        default=1.0, ge=0, description="How long a broker status (workers, voices) is reused.")
    max_connections: int = Field(
        default=512, ge=1, description="HTTP connections and requests at once; beyond, new ones get 503.")
    idle_timeout_s: float = Field(
        default=15.0, gt=0,
        description="Close a connection that has not sent a whole request this long after connecting, or stays "
                    "idle this long between requests.")
    graceful_shutdown_s: float = Field(
        default=30.0, ge=0, description="On SIGTERM, how long in-flight HTTP requests may finish.")
    ready_file: Optional[Path] = Field(
        default=None, description="Write the bound URL as JSON here once listening (for scripts and tests).")

    def body_limit_bytes(self) -> int:
        """max_body_bytes, or what the longest accepted input needs as JSON (\\uXXXX escapes) with room to spare."""
        return self.max_body_bytes or 6 * self.max_input_chars + 64 * 1024

    @field_validator("models", "voices", mode="before")
    @classmethod
    def _mapping(cls, value: Any, info: Any) -> Any:
        return _parse_mapping(value, info.field_name)

    @field_validator("api_keys", "speed_engines", mode="before")
    @classmethod
    def _list(cls, value: Any) -> Any:
        return _parse_list(value)

    def host_port(self) -> tuple[str, int]:
        """`listen` split into host and port; `[::1]:8000` for IPv6."""
        return parse_listen(self.listen)

    def tokens(self) -> frozenset[str]:
        """Every accepted bearer token: api_keys plus the key file's lines."""
        tokens = {t for t in self.api_keys if t}
        if self.api_key_file is not None:
            for line in self.api_key_file.read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    tokens.add(line)
        return frozenset(tokens)


def parse_listen(listen: str) -> tuple[str, int]:
    """`HOST:PORT` -> (host, port); raises ValueError with a readable message."""
    host, sep, port_text = listen.strip().rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT, got {listen!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"expected HOST:PORT with a numeric port, got {listen!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range in {listen!r}")
    return host, port
