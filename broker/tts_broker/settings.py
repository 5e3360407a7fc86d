"""Broker settings: environment (TTS_*), .env, then command-line flags on top."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from tts_protocol import DEFAULT_BACKEND, DEFAULT_FRONTEND


class BrokerSettings(BaseSettings):
    """Everything the broker can be told; see .env.example for the documented names."""

    model_config = SettingsConfigDict(env_prefix="TTS_", env_file=".env", extra="ignore")

    frontend: str = Field(DEFAULT_FRONTEND, description="endpoint clients connect to (bound)")
    backend: str = Field(DEFAULT_BACKEND, description="endpoint workers connect to (bound)")
    heartbeat_interval_s: float = Field(1.0, gt=0, description="heartbeat period, both ways")
    heartbeat_liveness: int = Field(3, ge=1, description="missed heartbeats before a worker is dead")
    max_attempts: int = Field(3, ge=1, description="attempts before a job fails as a poison job")
    max_queue: int = Field(10_000, ge=1, description="queued jobs before SUBMIT answers queue_full")
    max_text_chars: int = Field(20_000, ge=1, description="longest text a job may carry")
    job_timeout_s: float = Field(300.0, gt=0, description="default per-attempt run time limit")
    drain_grace_s: float = Field(30.0, ge=0, description="on SIGTERM, how long running jobs may finish")
    default_model: Optional[str] = Field(None, description="routing key for jobs that name no model")
    unroutable_timeout_s: float = Field(
        0.0, ge=0, description="fail a job no connected worker can serve after this long (0 = wait)"
    )
    result_ttl_s: float = Field(300.0, ge=0, description="how long finished jobs and results are kept")
    max_retained_bytes: int = Field(256 * 1024 * 1024, ge=0, description="audio kept for finished jobs")
    max_retained_jobs: int = Field(100_000, ge=0, description="finished jobs kept for status/resubmit")
    sticky_max_wait_s: float = Field(2.0, ge=0, description="warm-speaker routing never delays a job longer")
    frontend_max_msg_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    backend_max_msg_bytes: int = Field(256 * 1024 * 1024, ge=1024)
    state_dir: str = Field(".tts-broker", description="folder for the journal and the result cache")
    journal_enabled: bool = Field(True, description="record jobs in an SQLite journal (survives restarts)")
    journal_path: Optional[str] = Field(None, description="journal file; default STATE_DIR/journal.sqlite3")
    journal_sync: Literal["normal", "full"] = Field(
        "normal", description="normal survives a broker crash; full also survives power loss (fsync per group)"
    )
    cache_enabled: bool = Field(True, description="serve identical deterministic requests from a result cache")
    cache_dir: Optional[str] = Field(None, description="result cache folder; default STATE_DIR/results")
    cache_max_mb: int = Field(1024, ge=1, description="result cache size bound")
    ready_file: Optional[str] = Field(None, description="write bound endpoints as JSON here once ready")
    http: Optional[str] = Field(
        None, description="HOST:PORT for /metrics, /api/status and the dashboard (port 0 = a free one; off if unset)"
    )
    log_level: str = Field("INFO")
    log_json: bool = Field(False, description="log one JSON object per line, with job_id and worker_id fields")

    def journal_file(self) -> Optional[Path]:
        if not self.journal_enabled:
            return None
        return Path(self.journal_path) if self.journal_path else Path(self.state_dir) / "journal.sqlite3"

    def cache_folder(self) -> Optional[Path]:
        if not self.cache_enabled:
            return None
        return Path(self.cache_dir) if self.cache_dir else Path(self.state_dir) / "results"
