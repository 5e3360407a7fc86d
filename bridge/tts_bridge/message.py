"""A queue message as a job: the `tts batch` line's keys (text, speaker, id, model, voice, stream_index)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from typing import Any, Mapping, Optional

from tts_bridge.errors import MalformedJob

_JOB_ID_BAD = re.compile(r"[^A-Za-z0-9._:-]")
_JOB_ID_MAX = 128


@dataclasses.dataclass(frozen=True, slots=True)
class JobMessage:
    """One valid job taken from a queue; job_id is stable across redeliveries of the same message."""

    job_id: str
    text: str
    line_id: str
    stream_index: str
    speaker: Optional[str] = None
    model: Optional[str] = None
    voice: dict[str, Any] = dataclasses.field(default_factory=dict)
    tenant: Optional[str] = None


def job_id_from(*parts: str) -> str:
    """A valid job id (PROTOCOL.md section 3: 1..128 of [A-Za-z0-9._:-]) made of the parts; hashed when long."""
    raw = _JOB_ID_BAD.sub("_", ":".join(p for p in parts if p))
    if len(raw) <= _JOB_ID_MAX:
        return raw or "job"
    return f"{raw[:_JOB_ID_MAX - 25]}~{hashlib.sha256(raw.encode()).hexdigest()[:24]}"


def _name(value: Any, key: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise MalformedJob(f'"{key}" must be a string or an integer')
    return str(value)


def decode_json(raw: bytes | str) -> dict[str, Any]:
    """A message body as a JSON object; MalformedJob saying why not."""
    try:
        obj = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MalformedJob(f"not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise MalformedJob(f"not a JSON object (a JSON {type(obj).__name__})")
    return obj


def from_stream_fields(fields: Mapping[str, str]) -> dict[str, Any]:
    """A Redis Streams entry's fields as a message: one field per key, a nested value (`voice`) as a JSON
    string; or the whole message as one JSON object in the field `data`."""
    if "data" in fields:
        return decode_json(fields["data"])
    obj: dict[str, Any] = dict(fields)
    voice = obj.get("voice")
    if isinstance(voice, str):
        try:
            obj["voice"] = json.loads(voice)
        except json.JSONDecodeError:
            raise MalformedJob('"voice" is not a JSON object string') from None
    return obj


def parse_job(obj: Mapping[str, Any], *, default_id: str, job_id: str, max_text_chars: int,
              tenant_field: Optional[str] = None) -> JobMessage:
    """Check a decoded message and make it a JobMessage; MalformedJob with a one-line reason otherwise."""
    text = obj.get("text")
    if not isinstance(text, str) or not text.strip():
        raise MalformedJob('"text" is missing or not a non-empty string')
    if len(text) > max_text_chars:
        raise MalformedJob(f'"text" has {len(text)} characters; the limit is {max_text_chars}')
    speaker = obj.get("speaker")
    if speaker is not None and not isinstance(speaker, str):
        raise MalformedJob('"speaker" must be a string')
    model = obj.get("model")
    if model is not None and (not isinstance(model, str) or not model):
        raise MalformedJob('"model" must be a non-empty string (ENGINE or ENGINE:MODEL)')
    voice = obj.get("voice", {})
    if not isinstance(voice, dict):
        raise MalformedJob('"voice" must be an object')
    line_id = _name(obj.get("id", default_id), "id")
    stream_index = _name(obj.get("stream_index", 0), "stream_index")
    tenant = None
    if tenant_field:
        value = obj.get(tenant_field)
        tenant = None if value is None else str(value)
    return JobMessage(job_id=job_id, text=text, line_id=line_id, stream_index=stream_index, speaker=speaker,
                      model=model, voice=voice, tenant=tenant)
