"""Read a `tts batch` input file: one JSON object per line, {"text", "speaker", "id"[, "stream_index"]}."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Iterable, Optional

from tts_protocol import output_filename


@dataclasses.dataclass(frozen=True, slots=True)
class BatchLine:
    """One valid input line."""

    line_no: int
    text: str
    speaker: Optional[str]
    line_id: str
    stream_index: str
    voice: dict[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class BadLine:
    """An input line that cannot become a job, and why."""

    line_no: int
    reason: str


def _as_name(value: Any, key: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f'"{key}" must be a string or an integer')
    return str(value)


def _parse(line_no: int, raw: str) -> BatchLine:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    text = obj.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ValueError('"text" must be a non-empty string')
    speaker = obj.get("speaker")
    if speaker is not None and not isinstance(speaker, str):
        raise ValueError('"speaker" must be a string')
    line_id = _as_name(obj.get("id", line_no), "id")
    stream_index = _as_name(obj.get("stream_index", 0), "stream_index")
    voice = obj.get("voice", {})
    if not isinstance(voice, dict):
        raise ValueError('"voice" must be an object')
    return BatchLine(line_no, text, speaker, line_id, stream_index, voice)


def read_batch(lines: Iterable[str], ext: str) -> tuple[list[BatchLine], list[BadLine]]:
    """Valid lines and bad ones (1-based line numbers). Blank lines are skipped; a line whose output file
    name repeats an earlier line's is bad, since it would overwrite that file."""
    good: list[BatchLine] = []
    bad: list[BadLine] = []
    names: dict[str, int] = {}
    for line_no, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            line = _parse(line_no, raw)
        except ValueError as exc:
            bad.append(BadLine(line_no, str(exc)))
            continue
        name = output_filename(line.stream_index, line.line_id, ext)
        if name in names:
            bad.append(BadLine(line_no, f"output {name} repeats line {names[name]}"))
            continue
        names[name] = line_no
        good.append(line)
    return good, bad
