"""Split long text into segments of at most N UTF-8 bytes, at sentence, then clause, then word boundaries.

S1-mini's generator takes one text per call and refuses prompts near its context size, so the engine feeds
it one segment at a time (1.5's generator splits by itself). Each segment becomes one streamed chunk.
"""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"(?<=[.!?。！？…;；])\s+|\n+")
_CLAUSE_END = re.compile(r"(?<=[,，、:：])\s*")
_SPACE = re.compile(r"\s+")


def _bytes(text: str) -> int:
    return len(text.encode("utf-8"))


def _hard_split(text: str, max_bytes: int) -> list[str]:
    """Cut at character boundaries (for a 'word' longer than max_bytes, e.g. CJK without spaces)."""
    parts, current = [], ""
    for char in text:
        if current and _bytes(current + char) > max_bytes:
            parts.append(current)
            current = ""
        current += char
    if current:
        parts.append(current)
    return parts


def _pack(pieces: list[str], max_bytes: int, joiner: str) -> list[str]:
    """Greedily join pieces while the result fits."""
    out: list[str] = []
    current = ""
    for piece in pieces:
        candidate = f"{current}{joiner}{piece}" if current else piece
        if _bytes(candidate) <= max_bytes:
            current = candidate
        else:
            if current:
                out.append(current)
            current = piece
    if current:
        out.append(current)
    return out


def _split_long(sentence: str, max_bytes: int) -> list[str]:
    if _bytes(sentence) <= max_bytes:
        return [sentence]
    pieces: list[str] = []
    for clause in (c for c in _CLAUSE_END.split(sentence) if c):
        if _bytes(clause) <= max_bytes:
            pieces.append(clause)
            continue
        for word in (w for w in _SPACE.split(clause) if w):
            pieces.extend(_hard_split(word, max_bytes) if _bytes(word) > max_bytes else [word])
    return _pack(pieces, max_bytes, " ")


def split_text(text: str, max_bytes: int) -> list[str]:
    """Segments of at most `max_bytes` UTF-8 bytes, in order, none empty; [] for blank text."""
    if max_bytes < 4:
        raise ValueError("max_bytes must be at least 4 (one UTF-8 character)")
    sentences = [s.strip() for s in _SENTENCE_END.split(text.strip()) if s and s.strip()]
    pieces: list[str] = []
    for sentence in sentences:
        pieces.extend(_split_long(sentence, max_bytes))
    return _pack(pieces, max_bytes, " ")
