"""Client settings: environment (TTS_BROKER_URL, TTS_CLIENT_*) and .env, overridden by explicit arguments."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tts_protocol import DEFAULT_FRONTEND
from tts_protocol.curve import CurveKeyError, CurveKeys, curve_keys
from tts_protocol.endpoints import split_endpoints

from tts_client.retry import BACKOFF_CAP_S, BACKOFF_INITIAL_S, PING_INTERVAL_S, RESUBMIT_AFTER_S

OutputFormat = Literal["wav", "flac", "ogg", "mp3"]


class ClientSettings(BaseSettings):
    """How a client reaches the broker and how patient it is."""

    model_config = SettingsConfigDict(env_prefix="TTS_CLIENT_", env_file=".env", extra="ignore",
                                      populate_by_name=True)

    broker_url: str = Field(
        default=DEFAULT_FRONTEND,
        validation_alias=AliasChoices("TTS_BROKER_URL", "broker_url"),
        description="The broker's frontend endpoint (clients connect here), or a comma-separated list: an active "
        "broker and its standbys, tried one at a time (docs/failover.md).",
    )
    timeout_s: float = Field(default=300.0, ge=0, description="Default per-job timeout; 0 = wait forever.")
    request_timeout_s: float = Field(default=5.0, gt=0, description="Timeout of ping/status/reload requests.")
    connect_timeout_s: float = Field(
        default=10.0, ge=0,
        description="A broker that has not answered (or stopped answering) for this long fails the waiting calls "
                    "with BrokerUnavailable, whatever their own timeout; 0 = wait for the call's timeout.")
    ping_interval_s: float = Field(
        default=PING_INTERVAL_S, gt=0, description="How often the client pings to spot a broker restart.")
    resubmit_after_s: float = Field(
        default=RESUBMIT_AFTER_S, gt=0,
        description="Resubmit (same job_id) an unfinished job the broker has said nothing about this long.")
    retry_backoff_initial_s: float = Field(
        default=BACKOFF_INITIAL_S, gt=0, description="First wait before retrying a retryable error.")
    retry_backoff_max_s: float = Field(
        default=BACKOFF_CAP_S, gt=0, description="Longest wait between retries (PROTOCOL.md section 9).")
    cancel_on_timeout: bool = Field(default=True, description="Send CANCEL for a job whose call timed out.")
    model: Optional[str] = Field(
        default=None, description="Default routing key (ENGINE or ENGINE:MODEL); unset = the broker's.")
    speaker: Optional[str] = Field(default=None, description="Default speaker when a call names none.")
    output_format: OutputFormat = Field(
        default="wav", description="Audio file format: wav, flac, ogg (vorbis) or mp3.")
    output_dir: str = Field(default="output", description="Default output folder of the seed API and the CLI.")
    max_in_flight: int = Field(default=256, ge=1, description="Most jobs a batch keeps submitted at once.")
    curve_secret: Optional[str] = Field(
        default=None, description="This client's CURVE key pair (NAME.key_secret); with broker_key turns CURVE on.")
    broker_key: Optional[str] = Field(
        default=None, description="The broker's CURVE public key file (NAME.key).")

    @model_validator(mode="after")
    def _check_curve(self) -> ClientSettings:
        self.curve_keys()  # both or neither, and readable: fail when the client is made, clearly
        return self

    def curve_keys(self) -> Optional[CurveKeys]:
        """The CURVE keys for the client's socket, None when CURVE is off."""
        try:
            return curve_keys(self.curve_secret, self.broker_key)
        except CurveKeyError as exc:
            raise ValueError(str(exc)) from exc

    @field_validator("broker_url")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        split_endpoints(value)
        return value

    def endpoints(self) -> list[str]:
        """broker_url as a list (one endpoint, or an active broker and its standbys)."""
        return split_endpoints(self.broker_url)
