"""A job as a row of the dashboard: its view plus what lets a person recognise it (speaker, a text excerpt,
the line it came from, the client that sent it). Only the dashboard (behind --http and its token) shows these."""

from __future__ import annotations

import re
from typing import Any, Optional

from tts_broker.jobs import Job

EXCERPT_CHARS = 48
_LINE_IDS = (
    re.compile(r"^b-[^-]*-(?P<stream>[^-]+)-(?P<line>.+)-[0-9a-f]{16}$"),  # tts batch: b-FILE-STREAM-ID-DIGEST
    re.compile(r"^line-(?P<stream>[^-]+)-(?P<line>.+)-[0-9a-f]{16}$"),  # seed API: line-STREAM-ID-HEX
)


def line_of(job_id: str) -> Optional[str]:
    """`STREAM/ID` for the job ids `tts batch` and generate_audio make, None for others."""
    for pattern in _LINE_IDS:
        match = pattern.match(job_id)
        if match:
            return f"{match['stream']}/{match['line']}"
    return None


def excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= EXCERPT_CHARS else flat[:EXCERPT_CHARS - 1] + "…"


def job_row(job: Job, now: float) -> dict[str, Any]:
    row = job.view(now).to_wire()
    row["speaker"] = job.request.speaker
    row["text"] = excerpt(job.request.text)
    row["line"] = line_of(job.job_id)
    row["client"] = job.owner or (job.client.hex()[-8:] if job.client else None)
    return row
