"""Output file naming shared by the Python and Node clients (PROTOCOL.md section 7)."""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
MAX_PART_CHARS = 64


def safe_name_part(value: object) -> str:
    """One component of a file name that cannot leave its folder or hide itself."""
    text = _UNSAFE.sub("_", str(value)).lstrip(".")
    text = text[:MAX_PART_CHARS]
    return text or "_"


def output_filename(stream_index: object, line_id: object, ext: str) -> str:
    """`{stream_index}_{id}.{ext}` with each part made safe."""
    return f"{safe_name_part(stream_index)}_{safe_name_part(line_id)}.{safe_name_part(ext)}"
