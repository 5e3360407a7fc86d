"""Content-addressed cache of finished audio: an identical request is answered without synthesis.

The key is a SHA-256 of everything that shapes the audio and the broker knows: text, speaker, voice settings
(sorted), the routing key the job resolved to (`ENGINE` or `ENGINE:MODEL`) and, under CURVE, the scope:
the submitting client key's name, so one key can neither hear nor probe (by timing) what another key had
spoken, unless both are in the broker's `cache_shared_keys`. A job with no routing key (no `model` and no
broker default) is not cached, since any engine might serve it. The output format is the client's business
(the broker keeps PCM), so one entry serves every format. RELOAD of a model drops the entries that model's
workers produced (a new checkpoint makes them stale) and keeps every other model's.

Entries are files `<2 hex>/<key>.tts` (a length-prefixed msgpack header, then PCM), written atomically;
least recently used entries are deleted beyond `max_bytes`. The header names the producing engine and model,
read back at start so that a later RELOAD knows what to drop. A folder that cannot be written (permissions,
disk full) costs one log line per minute, not one per result.
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

from tts_broker.throttle import LogThrottle

log = logging.getLogger(__name__)

_HEADER_LEN = struct.Struct("<I")
_SUFFIX = ".tts"


def cache_key(text: str, speaker: Optional[str], voice: Mapping[str, Any], model: Optional[str],
              scope: Optional[str] = None) -> Optional[str]:
    """The entry's name; `scope` (a client key's name, or "shared") separates what different keys may hit."""
    if not model:
        return None
    fields: list[Any] = [1, text, speaker, sorted(voice.items()), model]
    if scope is not None:
        fields.append(scope)
    return hashlib.sha256(msgpack.packb(fields, use_bin_type=True)).hexdigest()


def producer(meta: Any) -> Optional[tuple[str, str]]:
    if isinstance(meta, dict) and isinstance(meta.get("engine"), str):
        model = meta.get("model")
        return meta["engine"], model if isinstance(model, str) else ""
    return None


def made_by(origin: Optional[tuple[str, str]], routing_key: Optional[str]) -> bool:
    """Whether an entry from `origin` (engine, model) is stale after a RELOAD of `routing_key` (None: all)."""
    if origin is None or routing_key is None:
        return True  # unknown origin: drop it rather than serve a stale voice
    engine, model = origin
    return routing_key in (engine, f"{engine}:{model}")


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
        self.write_errors = 0
        self._producers: dict[str, Optional[tuple[str, str]]] = {}
        self._write_fault = LogThrottle(log, interval_s=60.0)
        folder.mkdir(parents=True, exist_ok=True)
        self._scan()

    def _scan(self) -> None:
        entries = []
        for path in self.folder.glob(f"*/*{_SUFFIX}"):
            try:
                stat = path.stat()
                origin = producer(_read_header(path))
            except FileNotFoundError:
                continue
            except (OSError, ValueError, struct.error, msgpack.UnpackException):
                origin = None
            entries.append((stat.st_mtime, path.stem, stat.st_size, origin))
        for _, key, size, origin in sorted(entries, key=lambda e: e[:3]):
            self._sizes[key] = size
            self._producers[key] = origin
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
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)  # the folder may have gone or turned read-only
            with open(tmp, "wb") as fh:
                fh.write(_HEADER_LEN.pack(len(header)))
                fh.write(header)
                fh.write(pcm)
            os.replace(tmp, path)
        except OSError as exc:
            self.write_errors += 1
            self._write_fault.warning("result cache: cannot store results in %s (%d failed so far): %s",
                                      self.folder, self.write_errors, exc)
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            return
        self._bytes += size - self._sizes.pop(key, 0)
        self._sizes[key] = size
        self._producers[key] = producer(meta)
        self.stores += 1
        self._evict()

    def has(self, key: str) -> bool:
        """Whether an entry is indexed (memory only; `get` may still find it unreadable); a miss is counted."""
        if key in self._sizes:
            return True
        self.misses += 1
        return False

    def forget(self, model: Optional[str] = None) -> list[str]:
        """Drop from the index (at once, no disk) the entries a RELOAD of routing key `model` makes stale, every
        entry when None; returns their keys for `remove_files`, which runs outside the broker's transitions."""
        if model is None:
            stale = list(self._sizes)
            self._sizes.clear()
            self._producers.clear()
            self._bytes = 0
            return stale
        stale = [key for key in self._sizes if made_by(self._producers.get(key), model)]
        for key in stale:
            self._bytes -= self._sizes.pop(key, 0)
            self._producers.pop(key, None)
        return stale

    def remove_files(self, keys: list[str]) -> None:
        for key in keys:
            if key not in self._sizes:  # not stored again since
                self._unlink(key)

    def clear(self, model: Optional[str] = None) -> int:
        """Drop the entries a RELOAD of routing key `model` makes stale (every entry when None), files included."""
        if model is not None:
            stale = self.forget(model)
            self.remove_files(stale)
            return len(stale)
        dropped = len(self.forget())
        shutil.rmtree(self.folder, ignore_errors=True)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._write_fault.warning("result cache: cannot recreate %s: %s", self.folder, exc)
        return dropped

    def _drop(self, key: str) -> None:
        self._bytes -= self._sizes.pop(key, 0)
        self._producers.pop(key, None)
        self._unlink(key)

    def _unlink(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            self._write_fault.warning("result cache: cannot delete entry %s: %s", key, exc)

    def _evict(self) -> None:
        while self._bytes > self.max_bytes and self._sizes:
            self._drop(next(iter(self._sizes)))
            self.evicted += 1

    def stats(self) -> dict[str, int]:
        return {"entries": len(self._sizes), "bytes": self._bytes, "max_bytes": self.max_bytes, "hits": self.hits,
                "misses": self.misses, "stores": self.stores, "evicted": self.evicted,
                "write_errors": self.write_errors}


def _read_header(path: Path) -> Any:
    with open(path, "rb") as fh:
        (n,) = _HEADER_LEN.unpack(fh.read(_HEADER_LEN.size))
        return msgpack.unpackb(fh.read(n), raw=False)
