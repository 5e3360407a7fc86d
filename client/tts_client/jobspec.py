"""Turn a call's arguments into a validated SUBMIT body; make job ids (PROTOCOL.md section 7)."""

from __future__ import annotations

import secrets
from typing import Any, Mapping, Optional

from pydantic import ValidationError

from tts_protocol import Priority
from tts_protocol.messages import Submit

from tts_client.errors import InvalidRequest
from tts_client.settings import ClientSettings

VoiceSettings = Mapping[str, Any]


def new_job_id(prefix: str = "job") -> str:
    """`{prefix}-{random hex}`: unique enough to be the broker's idempotency key."""
    return f"{prefix}-{secrets.token_hex(8)}"


def make_submit(
    settings: ClientSettings,
    text: str,
    *,
    job_id: Optional[str] = None,
    speaker: Optional[str] = None,
    model: Optional[str] = None,
    priority: str | Priority = Priority.NORMAL,
    deadline_ms: int = 0,
    attempt_timeout_ms: int = 0,
    voice: Optional[VoiceSettings] = None,
    stream: bool = False,
    cache: Optional[bool] = None,
) -> Submit:
    """A SUBMIT body; speaker and model fall back to the settings. Raises InvalidRequest."""
    try:
        return Submit.model_validate({
            "job_id": job_id if job_id is not None else new_job_id(),
            "text": text,
            "speaker": speaker if speaker is not None else settings.speaker,
            "model": model if model is not None else settings.model,
            "priority": Priority(priority),
            "deadline_ms": deadline_ms,
            "timeout_ms": attempt_timeout_ms,
            "stream": stream,
            "voice": dict(voice or {}),
            "cache": cache,
        })
    except (ValidationError, ValueError) as exc:
        raise InvalidRequest(f"invalid job request: {exc}") from exc
