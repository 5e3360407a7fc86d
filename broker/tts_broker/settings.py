"""Broker settings: environment (TTS_*), .env, then command-line flags on top."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tts_protocol import DEFAULT_BACKEND, DEFAULT_FRONTEND
from tts_protocol.messages import MAX_CAPACITY, MAX_DURATION_MS


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
    job_timeout_s: float = Field(300.0, gt=0, le=MAX_DURATION_MS / 1000,
                                 description="default per-attempt run time limit (at most 7 days)")
    drain_grace_s: float = Field(
        30.0, ge=0, description="on SIGTERM, how long queued and running jobs may finish; the drain ends sooner"
        " once nothing runs and no worker serves a queued job (the journal keeps those for the next start)"
    )
    default_model: Optional[str] = Field(None, description="routing key for jobs that name no model")
    unroutable_timeout_s: float = Field(
        0.0, ge=0, description="fail a job no connected worker can serve after this long (0 = wait)"
    )
    max_worker_capacity: int = Field(
        64, ge=1, le=MAX_CAPACITY, description="a READY claiming more slots is clamped to this (logged)"
    )
    max_result_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="audio of one job; a bigger W_RESULT fails the job with too_large"
    )
    max_client_queued: int = Field(
        5_000, ge=0, description="queued jobs per client before SUBMIT answers too_many_jobs (0 = no cap)"
    )
    max_client_running: int = Field(
        0, ge=0, description="jobs of one client running at once; the rest wait their turn (0 = no cap)"
    )
    allow_high_priority: Literal["all", "none", "admin"] = Field(
        "all", description="who may submit priority high: all, none (downgraded to normal), admin (admin keys); "
                           "unset: admin under CURVE, all without"
    )
    result_ttl_s: float = Field(300.0, ge=0, description="how long finished jobs and results are kept")
    dead_letter_ttl_s: float = Field(
        7 * 86400.0, ge=0,
        description="how long failed jobs (the dead letters: `tts jobs --failed`, `tts retry`, `tts get`) are kept,"
                    " apart from finished audio and its result_ttl_s; journaled; 0 = as long as results")
    max_retained_bytes: int = Field(256 * 1024 * 1024, ge=0, description="audio kept for finished jobs")
    max_retained_jobs: int = Field(100_000, ge=0, description="finished jobs kept for status/resubmit")
    sticky_max_wait_s: float = Field(2.0, ge=0, description="warm-speaker routing never delays a job longer")
    frontend_max_msg_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    backend_max_msg_bytes: int = Field(256 * 1024 * 1024, ge=1024)
    state_dir: str = Field(".tts-broker", description="folder for the journal and the result cache")
    journal_enabled: bool = Field(True, description="record jobs in an SQLite journal (survives restarts)")
    journal_path: Optional[str] = Field(None, description="journal file; default STATE_DIR/journal.sqlite3")
    journal_url: Optional[str] = Field(
        None, description="postgresql://USER:PASSWORD@HOST:PORT/DB: journal and leadership in PostgreSQL (needs the "
        "postgres extra); brokers with the same URL elect one active, the rest stand by (docs/failover.md)",
        json_schema_extra={"secret": True},  # the URL may carry a password: --help names the variable only
    )
    leader_lease_s: float = Field(
        3.0, ge=0.5, le=300, description="PostgreSQL journal: a silent active broker loses leadership after this"
    )
    journal_sync: Literal["normal", "full"] = Field(
        "normal", description="normal survives a broker crash; full also survives power loss (fsync per group)"
    )
    journal_max_audio_mb: int = Field(
        1024, ge=0, description="audio of finished jobs kept in the journal; oldest jobs pruned beyond (0 = no cap)"
    )
    accept_journal_loss: bool = Field(
        False, description="start even if the journal lost data (truncated, deleted, WAL lost); its jobs are gone"
    )
    journal_retry_s: float = Field(0.5, gt=0, description="while journal commits fail, retry this often")
    client_backlog_max_bytes: int = Field(
        64 * 1024 * 1024, ge=0,
        description="replies (RESULT/PARTIAL audio) held for one client that is not reading; oldest dropped beyond",
    )
    client_sndhwm: int = Field(32, ge=1, description="messages ZeroMQ queues towards one client before the backlog")
    cache_enabled: bool = Field(True, description="serve identical deterministic requests from a result cache")
    cache_dir: Optional[str] = Field(None, description="result cache folder; default STATE_DIR/results")
    cache_max_mb: int = Field(1024, ge=1, description="result cache size bound")
    cache_shared_keys: Optional[str] = Field(
        None, description="under CURVE, client key names (comma-separated, * = all) that share cache hits; "
                          "unset = each key hits only its own results"
    )

    def cache_shared(self) -> frozenset[str]:
        """The key names of cache_shared_keys."""
        return frozenset(name.strip() for name in (self.cache_shared_keys or "").split(",") if name.strip())
    ready_file: Optional[str] = Field(None, description="write bound endpoints as JSON here once ready")
    http: Optional[str] = Field(
        None, description="HOST:PORT for /metrics, /api/status and the dashboard (port 0 = a free one; off if unset)"
    )
    metrics_models: Optional[str] = Field(
        None, description="routing keys (comma-separated) always labelled in /metrics, e.g. a model that scales "
                          "from zero workers; other keys are labelled only while a worker serves them, else `other`"
    )

    def metrics_pinned(self) -> list[str]:
        return [key.strip() for key in (self.metrics_models or "").split(",") if key.strip()]

    http_max_connections: int = Field(
        256, ge=1, description="HTTP connections at once (at most a quarter of the descriptor limit); more are closed"
    )
    http_idle_timeout_s: float = Field(
        15.0, gt=0, description="an HTTP connection that sends nothing this long (headers included) is closed"
    )
    http_token_file: Optional[str] = Field(
        None, description="file of bearer tokens (one a line) that /metrics and /api/* then require; unset = open"
    )

    def http_tokens(self) -> list[str]:
        """The tokens of http_token_file (blank lines and # comments skipped); [] when unset."""
        if not self.http_token_file:
            return []
        lines = Path(self.http_token_file).read_text(encoding="utf-8").splitlines()
        return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    log_level: str = Field("INFO")
    curve_secret: Optional[str] = Field(
        None, description="the broker's CURVE key pair (NAME.key_secret); turns CURVE on for both ports"
    )
    client_keys: Optional[str] = Field(None, description="folder of client public keys (*.key) allowed in")
    worker_keys: Optional[str] = Field(None, description="folder of worker public keys (*.key) allowed in")
    admin_keys: Optional[str] = Field(None, description="folder of admin public keys: clients with every right")

    @property
    def curve(self) -> bool:
        return bool(self.curve_secret)

    @model_validator(mode="after")
    def _check_curve(self) -> BrokerSettings:
        folders = (self.client_keys, self.worker_keys, self.admin_keys)
        if self.curve_secret and not (self.client_keys and self.worker_keys):
            raise ValueError("CURVE (curve_secret) needs both client_keys and worker_keys folders")
        if not self.curve_secret and any(folders):
            raise ValueError("key folders are given but no curve_secret: CURVE would be off")
        if self.curve_secret and "allow_high_priority" not in self.model_fields_set:
            # Under CURVE clients are separate trust domains: one key's high priority would starve the others.
            object.__setattr__(self, "allow_high_priority", "admin")
        return self
    log_json: bool = Field(False, description="log one JSON object per line, with job_id and worker_id fields")

    def journal_file(self) -> Optional[Path]:
        if not self.journal_enabled or self.journal_url:
            return None
        return Path(self.journal_path) if self.journal_path else Path(self.state_dir) / "journal.sqlite3"

    def lock_folders(self) -> list[Path]:
        """Folders this broker must own alone: the state dir and the journal's folder (if elsewhere)."""
        folders = [Path(self.state_dir)] if self.journal_enabled or self.cache_enabled else []
        journal = self.journal_file()
        if journal is not None:
            folders.append(journal.parent)
        cache = self.cache_folder()
        if cache is not None and self.cache_dir:
            folders.append(cache)
        return folders

    def cache_folder(self) -> Optional[Path]:
        if not self.cache_enabled:
            return None
        return Path(self.cache_dir) if self.cache_dir else Path(self.state_dir) / "results"
