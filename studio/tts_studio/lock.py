"""The lock file `DIR/tts-build.lock`: per line, the hash of what decides its audio and of the file written.

JSON Lines, one record per line id; a later record for an id replaces an earlier one. A build appends a record
as each line finishes (flushed, so a kill -9 loses at most the line being written), and rewrites the file
compacted, atomically, when it ends. A torn last line (the kill landed mid-write) is ignored on reading.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import IO, Any, Iterator, Optional

LOCK_NAME = "tts-build.lock"
VERSION = 1


class LockFile:
    """Records by line id, loaded at start; `record()` appends one durably."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_NAME
        self.records: dict[str, dict[str, Any]] = {}
        self._out: Optional[IO[str]] = None
        self._load()

    def _load(self) -> None:
        try:
            handle = open(self.path, encoding="utf-8")
        except FileNotFoundError:
            return
        with handle:
            for raw in handle:
                try:
                    rec = json.loads(raw)
                except json.JSONDecodeError:
                    continue  # a torn last write
                if isinstance(rec, dict) and isinstance(rec.get("id"), str):
                    self.records[rec["id"]] = rec

    def get(self, line_id: str) -> Optional[dict[str, Any]]:
        return self.records.get(line_id)

    def record(self, rec: dict[str, Any]) -> None:
        """Remember one line's outcome now (appended and flushed)."""
        self.records[rec["id"]] = rec
        if self._out is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._out = open(self.path, "a", encoding="utf-8")
        self._out.write(json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n")
        self._out.flush()

    def forget(self, line_id: str) -> None:
        self.records.pop(line_id, None)

    def compact(self) -> None:
        """Rewrite the file with one record per id (atomic replace)."""
        self.close()
        tmp = self.path.parent / f".{self.path.name}.{secrets.token_hex(6)}.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            for rec in self.records.values():
                handle.write(json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records.values())

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
