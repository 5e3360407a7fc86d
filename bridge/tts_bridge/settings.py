"""Bridge settings: environment (TTS_BRIDGE_*) and .env, overridden by the `tts bridge ...` flags."""

from __future__ import annotations

from typing import Optional

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class BridgeSettings(BaseSettings):
    """What every bridge shares: where audio goes, how many jobs run at once, metrics, status lines."""

    model_config = SettingsConfigDict(env_prefix="TTS_BRIDGE_", env_file=".env", extra="ignore",
                                      populate_by_name=True)

    output_dir: str = Field(default="output", description="Folder the bridges write audio files into.")
    max_in_flight: int = Field(default=64, ge=1, le=10_000,
                               description="Most jobs one bridge has submitted and not yet answered.")
    max_text_chars: int = Field(default=20_000, ge=1,
                                description="Longer texts are dead-lettered by the bridge (the broker's limit).")
    tenant_field: Optional[str] = Field(
        default=None, description="Message field whose value picks a separate broker client (fairness per value).")
    metrics_listen: Optional[str] = Field(
        default=None, description="HOST:PORT for the bridge's Prometheus /metrics; unset = no HTTP server.")
    status_interval_s: float = Field(default=10.0, ge=0, description="Seconds between status lines; 0 = none.")
    dead_after_s: float = Field(
        default=30.0, gt=0,
        description="A bridge silent this long is dead: its unacknowledged messages are taken over (Streams, BullMQ).")
