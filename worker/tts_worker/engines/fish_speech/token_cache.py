"""SEMANTIC_TOKEN_CACHE: reference audio encoded to codec tokens once, kept in memory and on disk.

Key: sha256 over (model family, codec checkpoint sha256, reference audio sha256, transcript), so a changed
clip, transcript or codec never reuses stale tokens. Memory: a bounded LRU (entries). Disk: `<key>.npy`
(the int codes) beside `<key>.json` (what the key was made of, checked on read), written atomically; a
corrupt or mismatching pair counts as a miss and is rewritten. Upstream's own cache is an unbounded dict on
the GPU keyed by file name, off by default; this one replaces it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Optional

import numpy as np

from tts_worker.engines.checksum import file_sha256

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


def cache_key(family: str, codec_sha256: str, audio_sha256: str, transcript: str) -> str:
    material = json.dumps([FORMAT_VERSION, family, codec_sha256, audio_sha256, transcript], ensure_ascii=False)
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class SemanticTokenCache:
    """Memory LRU + optional disk store of reference codes (int32 arrays shaped (codebooks, frames))."""

    def __init__(self, *, max_entries: int, disk_dir: Optional[Path]) -> None:
        self.max_entries = max(1, max_entries)
        self.disk_dir = Path(disk_dir).expanduser() if disk_dir is not None else None
        self._memory: "OrderedDict[str, np.ndarray]" = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.disk_hits = 0
        self.misses = 0
        self.evictions = 0
        if self.disk_dir is not None:
            self.disk_dir.mkdir(parents=True, exist_ok=True)

    def get(self, key: str, meta: dict[str, Any]) -> Optional[np.ndarray]:
        """The codes for `key` from memory, else disk (then kept in memory); None on a miss."""
        with self._lock:
            codes = self._memory.get(key)
            if codes is not None:
                self._memory.move_to_end(key)
                self.hits += 1
                return codes
        codes = self._read_disk(key, meta)
        with self._lock:
            if codes is None:
                self.misses += 1
                return None
            self.disk_hits += 1
            self._remember(key, codes)
        return codes

    def put(self, key: str, codes: np.ndarray, meta: dict[str, Any]) -> None:
        codes = np.ascontiguousarray(codes, dtype=np.int32)
        with self._lock:
            self._remember(key, codes)
        if self.disk_dir is not None:
            try:
                self._write_disk(key, codes, meta)
            except OSError as exc:  # a full or read-only disk costs speed, not the job
                log.warning("token cache: cannot write %s: %s", self.disk_dir, exc)

    def in_memory(self, key: str) -> bool:
        with self._lock:
            return key in self._memory

    def clear_memory(self) -> None:
        with self._lock:
            self._memory.clear()

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"cache_hits": self.hits, "cache_disk_hits": self.disk_hits, "cache_misses": self.misses,
                    "cache_size": len(self._memory), "cache_evictions": self.evictions}

    def _remember(self, key: str, codes: np.ndarray) -> None:
        self._memory[key] = codes
        self._memory.move_to_end(key)
        while len(self._memory) > self.max_entries:
            self._memory.popitem(last=False)
            self.evictions += 1

    def _paths(self, key: str) -> tuple[Path, Path]:
        assert self.disk_dir is not None
        return self.disk_dir / f"{key}.npy", self.disk_dir / f"{key}.json"

    def _read_disk(self, key: str, meta: dict[str, Any]) -> Optional[np.ndarray]:
        if self.disk_dir is None:
            return None
        npy, side = self._paths(key)
        if not npy.exists() or not side.exists():
            return None
        try:
            stored = json.loads(side.read_text(encoding="utf-8"))
            codes = np.load(npy, allow_pickle=False)
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            log.warning("token cache: unreadable entry %s (%s); encoding again", key[:12], exc)
            return None
        expected = {**meta, "version": FORMAT_VERSION, "shape": list(codes.shape)}
        if stored != expected or codes.ndim != 2 or not np.issubdtype(codes.dtype, np.integer):
            log.warning("token cache: entry %s does not match its key; encoding again", key[:12])
            return None
        return codes.astype(np.int32, copy=False)

    def _write_disk(self, key: str, codes: np.ndarray, meta: dict[str, Any]) -> None:
        import io

        npy, side = self._paths(key)
        buffer = io.BytesIO()
        np.save(buffer, codes, allow_pickle=False)
        _atomic_write(npy, buffer.getvalue())
        side_data = {**meta, "version": FORMAT_VERSION, "shape": list(codes.shape)}
        _atomic_write(side, json.dumps(side_data, ensure_ascii=False, sort_keys=True).encode("utf-8"))


def codec_fingerprint(path: Path, memo_dir: Optional[Path]) -> str:
    """sha256 of the codec weights, memoised on disk by (real path, size, mtime) so restarts stay fast."""
    stat = path.stat()
    memo_key = f"{os.path.realpath(path)}|{stat.st_size}|{stat.st_mtime_ns}"
    memo_file = memo_dir / "codec-sha256.json" if memo_dir is not None else None
    memo: dict[str, str] = {}
    if memo_file is not None and memo_file.exists():
        try:
            loaded = json.loads(memo_file.read_text(encoding="utf-8"))
            memo = {str(k): str(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            memo = {}
    if memo_key in memo:
        return memo[memo_key]
    digest = file_sha256(path)
    if memo_file is not None:
        memo[memo_key] = digest
        try:
            _atomic_write(memo_file, json.dumps(memo, indent=1, sort_keys=True).encode("utf-8"))
        except OSError as exc:
            log.warning("token cache: cannot write %s: %s", memo_file, exc)
    return digest
