"""Worker settings: environment (and .env) with documented names, overridden by CLI flags.

Built once in the entry point (cli.py) and passed down explicitly; nothing here reads the environment at
import time.

| field | env | default |
|---|---|---|
| broker_url | TTS_WORKER_BROKER | tcp://127.0.0.1:5556 |
| engine | TTS_ENGINE | piper |
| engine_options | TTS_ENGINE_OPTIONS (JSON object) | {} |
| device | AUDIO_DEVICE | auto |
| concurrency | CONCURRENT_REQUESTS | 2 (worker processes under one supervisor) |
| model_version | MODEL_VERSION | 1.5 |
| semantic_token_cache | SEMANTIC_TOKEN_CACHE | true |
| name | TTS_WORKER_NAME | host name |
| heartbeat_interval_s | TTS_HEARTBEAT_INTERVAL_S | 1.0 |
| heartbeat_liveness | TTS_HEARTBEAT_LIVENESS | 3 |
| reconnect_min_s / reconnect_max_s | TTS_WORKER_RECONNECT_MIN_S / _MAX_S | 1 / 32 |
| cancel_grace_s | TTS_WORKER_CANCEL_GRACE_S | 10 |
| max_jobs | TTS_WORKER_MAX_JOBS | 0 (unlimited) |
| max_rss_mb | TTS_WORKER_MAX_RSS_MB | 0 (off) |
| max_result_bytes | TTS_WORKER_MAX_RESULT_BYTES | 67108864 (a bigger result is sent as FAIL too_large) |
| log_level | TTS_LOG_LEVEL | INFO |
| curve_secret | TTS_WORKER_CURVE_SECRET | unset (CURVE off); this worker's NAME.key_secret |
| broker_key | TTS_WORKER_BROKER_KEY | unset; the broker's public key file (NAME.key) |
| log_json | TTS_LOG_JSON | false (one JSON object per log line) |
"""

from __future__ import annotations

import socket
from typing import Any, Optional

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tts_protocol.curve import CurveKeyError, CurveKeys, curve_keys

DEVICES = ("auto", "cpu", "cuda", "mps")


def _env(*names: str) -> Any:
    return AliasChoices(*names)


class WorkerSettings(BaseSettings):
    """Everything a worker process (or its supervisor) needs to know."""

    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", populate_by_name=True, frozen=True, case_sensitive=False
    )

    broker_url: str = Field("tcp://127.0.0.1:5556", validation_alias=_env("TTS_WORKER_BROKER", "broker_url"))
    engine: str = Field("piper", validation_alias=_env("TTS_ENGINE", "engine"))
    engine_options: dict[str, Any] = Field(
        default_factory=dict, validation_alias=_env("TTS_ENGINE_OPTIONS", "engine_options")
    )
    device: str = Field("auto", validation_alias=_env("AUDIO_DEVICE", "device"))
    concurrency: int = Field(2, ge=1, le=256, validation_alias=_env("CONCURRENT_REQUESTS", "concurrency"))
    model_version: str = Field("1.5", validation_alias=_env("MODEL_VERSION", "model_version"))
    semantic_token_cache: bool = Field(
        True, validation_alias=_env("SEMANTIC_TOKEN_CACHE", "semantic_token_cache")
    )
    name: str = Field(default_factory=socket.gethostname, validation_alias=_env("TTS_WORKER_NAME", "name"))
    heartbeat_interval_s: float = Field(
        1.0, gt=0, le=60, validation_alias=_env("TTS_HEARTBEAT_INTERVAL_S", "heartbeat_interval_s")
    )
    heartbeat_liveness: int = Field(
        3, ge=1, le=100, validation_alias=_env("TTS_HEARTBEAT_LIVENESS", "heartbeat_liveness")
    )
    reconnect_min_s: float = Field(
        1.0, gt=0, validation_alias=_env("TTS_WORKER_RECONNECT_MIN_S", "reconnect_min_s")
    )
    reconnect_max_s: float = Field(
        32.0, gt=0, validation_alias=_env("TTS_WORKER_RECONNECT_MAX_S", "reconnect_max_s")
    )
    cancel_grace_s: float = Field(
        10.0, gt=0, validation_alias=_env("TTS_WORKER_CANCEL_GRACE_S", "cancel_grace_s")
    )
    max_jobs: int = Field(0, ge=0, validation_alias=_env("TTS_WORKER_MAX_JOBS", "max_jobs"))
    max_rss_mb: int = Field(0, ge=0, validation_alias=_env("TTS_WORKER_MAX_RSS_MB", "max_rss_mb"))
    max_result_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, validation_alias=_env("TTS_WORKER_MAX_RESULT_BYTES", "max_result_bytes")
    )
    log_level: str = Field("INFO", validation_alias=_env("TTS_LOG_LEVEL", "log_level"))
    curve_secret: Optional[str] = Field(
        None, validation_alias=_env("TTS_WORKER_CURVE_SECRET", "curve_secret")
    )
    broker_key: Optional[str] = Field(None, validation_alias=_env("TTS_WORKER_BROKER_KEY", "broker_key"))

    @model_validator(mode="after")
    def _check_curve(self) -> WorkerSettings:
        self.curve_keys()  # both or neither, and readable: fail at start, not at the first connection
        return self

    def curve_keys(self) -> Optional[CurveKeys]:
        """The CURVE keys of this worker's connection, None when CURVE is off."""
        try:
            return curve_keys(self.curve_secret, self.broker_key)
        except CurveKeyError as exc:
            raise ValueError(str(exc)) from exc
    log_json: bool = Field(False, validation_alias=_env("TTS_LOG_JSON", "log_json"))

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        value = value.strip().lower()
        if value not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}")
        return value

    @field_validator("engine")
    @classmethod
    def _check_engine(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("engine name is empty")
        return value

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, value: str) -> str:
        return value.strip().upper()

    @property
    def broker_timeout_s(self) -> float:
        """Silence after which the broker is judged dead."""
        return self.heartbeat_interval_s * self.heartbeat_liveness
