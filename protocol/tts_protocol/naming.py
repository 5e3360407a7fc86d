"""Output file naming shared by the Python and Node clients (PROTOCOL.md section 7)."""

from __future__ import annotations

import hashlib
import re

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
MAX_PART_CHARS = 64


def safe_name_part(value: object) -> str:
    """One component of a file name that cannot leave its folder or hide itself."""
    text = _UNSAFE.sub("_", str(value)).lstrip(".")
    text = text[:MAX_PART_CHARS]
    return text or "_"


def safe_file_part(value: object) -> str:
    """safe_name_part, plus `-` and 8 hex digits of the value's SHA-256 whenever making it safe changed it.

    Two ids that differ only in unsafe characters ("a/b", "a?b") or past the 64th character would
    otherwise share one file, the second silently replacing the first.
    """
    text = str(value)
    safe = safe_name_part(text)
    if safe == text:
        return safe
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{safe[:MAX_PART_CHARS - 9]}-{digest}"


def output_filename(stream_index: object, line_id: object, ext: str) -> str:
    """`{stream_index}_{id}.{ext}` with each part made safe (and told apart by a digest if that changed it)."""
    return f"{safe_file_part(stream_index)}_{safe_file_part(line_id)}.{safe_name_part(ext)}"
