"""A job's options (JobOptions), the one place they become a SUBMIT body; job ids (PROTOCOL.md section 7)."""

from __future__ import annotations

import dataclasses
import secrets
from typing import Any, Mapping, Optional, TypedDict

from pydantic import ValidationError

from tts_protocol import Priority
from tts_protocol.messages import Submit

from tts_client.errors import InvalidRequest
from tts_client.settings import ClientSettings

VoiceSettings = Mapping[str, Any]


def new_job_id(prefix: str = "job") -> str:
    """`{prefix}-{random hex}`: unique enough to be the broker's idempotency key."""
    return f"{prefix}-{secrets.token_hex(8)}"


@dataclasses.dataclass(frozen=True, slots=True)
class JobOptions:
    """How one job should run: every keyword of submit/synthesize/stream, as one value to keep and reuse.

    None for speaker and model means the client settings' default; timeout_s None means settings.timeout_s
    (0 = wait forever). deadline_ms and attempt_timeout_ms are the broker's limits (0 = none / its default).
    """

    speaker: Optional[str] = None
    model: Optional[str] = None
    job_id: Optional[str] = None
    priority: str | Priority = Priority.NORMAL
    deadline_ms: int = 0
    attempt_timeout_ms: int = 0
    voice: Optional[VoiceSettings] = None
    cache: Optional[bool] = None
    timeout_s: Optional[float] = None

    def to_submit(self, settings: ClientSettings, text: str, *, stream: bool = False) -> Submit:
        """The SUBMIT body; a job id is made when none was given. Raises InvalidRequest."""
        if not isinstance(text, str) or not text.strip():
            raise InvalidRequest("bad_request: text is empty or only whitespace; nothing to synthesise")
        try:
            return Submit(
                job_id=self.job_id if self.job_id is not None else new_job_id(),
                text=text,
                speaker=self.speaker if self.speaker is not None else settings.speaker,
                model=self.model if self.model is not None else settings.model,
                priority=Priority(self.priority),
                deadline_ms=self.deadline_ms,
                timeout_ms=self.attempt_timeout_ms,
                stream=stream,
                voice=dict(self.voice or {}),
                cache=self.cache,
            )
        except (ValidationError, ValueError, TypeError) as exc:
            raise InvalidRequest(f"invalid job request: {exc}") from exc

    def call_timeout_s(self, settings: ClientSettings) -> float:
        """How long the call may take: timeout_s, else the settings' default."""
        return settings.timeout_s if self.timeout_s is None else self.timeout_s


class JobKeywords(TypedDict, total=False):
    """The fields of JobOptions as keyword arguments (what `**options` of submit/synthesize/stream takes)."""

    speaker: Optional[str]
    model: Optional[str]
    job_id: Optional[str]
    priority: str | Priority
    deadline_ms: int
    attempt_timeout_ms: int
    voice: Optional[VoiceSettings]
    cache: Optional[bool]
    timeout_s: Optional[float]


def job_options(options: Optional[JobOptions], keywords: JobKeywords) -> JobOptions:
    """`options` (or the defaults) with the keyword arguments laid over it; TypeError for an unknown one."""
    base = options if options is not None else JobOptions()
    return dataclasses.replace(base, **keywords) if keywords else base
