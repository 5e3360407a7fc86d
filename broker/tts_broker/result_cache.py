"""Content-addressed cache of finished audio: an identical request is answered without synthesis.

The key is a SHA-256 of everything that shapes the audio and the broker knows: text, speaker, voice settings
(sorted) and the routing key the job resolved to (`ENGINE` or `ENGINE:MODEL`). A job with no routing key
(no `model` and no broker default) is not cached, since any engine might serve it. The output format is the
client's business (the broker keeps PCM), so one entry serves every format. RELOAD clears the cache, since
a new checkpoint makes old entries stale.

Entries are files `<2 hex>/<key>.tts` (a length-prefixed msgpack header, then PCM), written atomically;
least recently used entries are deleted beyond `max_bytes`.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import os
import shutil
import struct
from pathlib import Path
from typing import Any, Mapping, Optional

import msgpack

log = logging.getLogger(__name__)

_HEADER_LEN = struct.Struct("<I")
_SUFFIX = ".tts"


def cache_key(text: str, speaker: Optional[str], voice: Mapping[str, Any], model: Optional[str]) -> Optional[str]:
    if not model:
        return None
    material = msgpack.packb([1, text, speaker, sorted(voice.items()), model], use_bin_type=True)
    return hashlib.sha256(material).hexdigest()


class ResultCache:
    """Bounded on-disk LRU of (metadata, PCM) by key."""

    def __init__(self, folder: Path, *, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self._sizes: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0
        self.stores = 0
        self.evicted = 0
        folder.mkdir(parents=True, exist_ok=True)
        self._scan()

    def _scan(self) -> None:
        entries = []
        for path in self.folder.glob(f"*/*{_SUFFIX}"):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            entries.append((stat.st_mtime, path.stem, stat.st_size))
        for _, key, size in sorted(entries):
            self._sizes[key] = size
            self._bytes += size
        self._evict()

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}{_SUFFIX}"

    def get(self, key: str) -> Optional[tuple[dict[str, Any], bytes]]:
        if key not in self._sizes:
            self.misses += 1
            return None
        try:
            data = self._path(key).read_bytes()
            (n,) = _HEADER_LEN.unpack_from(data)
            meta = msgpack.unpackb(data[_HEADER_LEN.size:_HEADER_LEN.size + n], raw=False)
            pcm = data[_HEADER_LEN.size + n:]
        except (OSError, ValueError, struct.error, msgpack.UnpackException) as exc:
            log.warning("result cache entry %s unreadable, dropped: %s", key, exc)
            self._drop(key)
            self.misses += 1
            return None
        self._sizes.move_to_end(key)
        self.hits += 1
        return meta, pcm

    def put(self, key: str, meta: dict[str, Any], pcm: bytes) -> None:
        header = msgpack.packb(meta, use_bin_type=True)
        size = _HEADER_LEN.size + len(header) + len(pcm)
        if size > self.max_bytes:
            return
        path = self._path(key)
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as fh:
                fh.write(_HEADER_LEN.pack(len(header)))
                fh.write(header)
                fh.write(pcm)
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("result cache: cannot store %s: %s", key, exc)
            tmp.unlink(missing_ok=True)
            return
        self._bytes += size - self._sizes.pop(key, 0)
        self._sizes[key] = size
        self.stores += 1
        self._evict()

    def has(self, key: str) -> bool:
        """Whether an entry is indexed (memory only; `get` may still find it unreadable); a miss is counted."""
        if key in self._sizes:
            return True
        self.misses += 1
        return False

    def forget(self) -> None:
        """Drop the index at once (RELOAD); `clear` removes the files later, outside the broker's transitions."""
        self._sizes.clear()
        self._bytes = 0

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._sizes.clear()
        self._bytes = 0

    def _drop(self, key: str) -> None:
        self._bytes -= self._sizes.pop(key, 0)
        self._path(key).unlink(missing_ok=True)

    def _evict(self) -> None:
        while self._bytes > self.max_bytes and self._sizes:
            self._drop(next(iter(self._sizes)))
            self.evicted += 1

    def stats(self) -> dict[str, int]:
        return {"entries": len(self._sizes), "bytes": self._bytes, "max_bytes": self.max_bytes, "hits": self.hits,
                "misses": self.misses, "stores": self.stores, "evicted": self.evicted}
