"""ResultCache in-process on a real folder: key semantics, put/get, LRU eviction by bytes, corruption, re-scan."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgpack
import pytest

from tts_broker.result_cache import ResultCache, cache_key

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]

META: dict[str, Any] = {"sample_rate": 22050, "channels": 1, "engine": "piper", "model": "joe"}


def entry_bytes(meta: dict[str, Any], pcm: bytes) -> int:
    """Size of one entry file: 4-byte header length, msgpack header, PCM (result_cache.py docstring)."""
    return 4 + len(msgpack.packb(meta, use_bin_type=True)) + len(pcm)


def key_of(name: str) -> str:
    key = cache_key(f"text {name}", "default", {}, "piper:joe")
    assert key is not None
    return key


def files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*/*.tts"))


def test_cache_key_covers_what_shapes_the_audio() -> None:
    base = cache_key("Hello.", "default", {"length_scale": 1.1, "volume": 0.5}, "piper:joe")
    assert base is not None and len(base) == 64 and int(base, 16) >= 0
    assert cache_key("Hello.", "default", {"volume": 0.5, "length_scale": 1.1}, "piper:joe") == base
    variants = [
        cache_key("Hello!", "default", {"length_scale": 1.1, "volume": 0.5}, "piper:joe"),
        cache_key("Hello.", "amy", {"length_scale": 1.1, "volume": 0.5}, "piper:joe"),
        cache_key("Hello.", None, {"length_scale": 1.1, "volume": 0.5}, "piper:joe"),
        cache_key("Hello.", "default", {"length_scale": 1.2, "volume": 0.5}, "piper:joe"),
        cache_key("Hello.", "default", {"length_scale": 1.1}, "piper:joe"),
        cache_key("Hello.", "default", {"length_scale": 1.1, "volume": 0.5}, "piper"),
        cache_key("Hello.", "default", {"length_scale": 1.1, "volume": 0.5}, "piper:amy"),
    ]
    assert None not in variants and len(set(variants)) == len(variants) and base not in variants


@pytest.mark.parametrize("model", [None, ""])
def test_a_job_without_routing_key_is_not_cached(model: Any) -> None:
    assert cache_key("Hello.", "default", {}, model) is None


def test_put_then_get_returns_meta_and_pcm_and_counts(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path / "cache", max_bytes=1 << 20)
    key, pcm = key_of("a"), b"\x01\x00" * 100
    assert cache.get(key) is None
    cache.put(key, META, pcm)
    assert files(tmp_path / "cache") == [tmp_path / "cache" / key[:2] / f"{key}.tts"]
    assert cache.get(key) == (META, pcm)
    assert cache.stats() == {"entries": 1, "bytes": entry_bytes(META, pcm), "max_bytes": 1 << 20, "hits": 1,
                             "misses": 1, "stores": 1, "evicted": 0, "write_errors": 0}


def test_put_of_the_same_key_replaces_without_double_counting(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path, max_bytes=1 << 20)
    key = key_of("a")
    cache.put(key, META, b"\x00" * 10)
    cache.put(key, META, b"\x00" * 30)
    assert cache.get(key) == (META, b"\x00" * 30)
    assert (cache.stats()["entries"], cache.stats()["bytes"]) == (1, entry_bytes(META, b"\x00" * 30))


def test_lru_eviction_by_bytes_and_get_makes_an_entry_most_recent(tmp_path: Path) -> None:
    pcm = b"\x00" * 1000
    size = entry_bytes(META, pcm)
    cache = ResultCache(tmp_path, max_bytes=3 * size)
    a, b, c, d, e = (key_of(name) for name in "abcde")
    for key in (a, b, c):
        cache.put(key, META, pcm)
    assert cache.stats()["bytes"] == 3 * size
    assert cache.get(a) is not None  # a is now the most recent: b is the oldest
    cache.put(d, META, pcm)
    assert [cache.get(k) is not None for k in (a, b, c, d)] == [True, False, True, True]
    # The lookups above touched a, c, d in that order: e pushes out a.
    cache.put(e, META, pcm)
    assert [k for k in (a, b, c, d, e) if cache.get(k) is not None] == [c, d, e]
    assert (cache.stats()["entries"], cache.stats()["bytes"]) == (3, 3 * size)
    assert len(files(tmp_path)) == 3


def test_an_entry_larger_than_max_bytes_is_not_stored(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path, max_bytes=500)
    small = key_of("small")
    cache.put(small, META, b"\x00" * 100)
    cache.put(key_of("huge"), META, b"\x00" * 500)
    assert files(tmp_path) == [tmp_path / small[:2] / f"{small}.tts"]
    assert (cache.stats()["entries"], cache.stats()["stores"]) == (1, 1)


@pytest.mark.parametrize("damage", ["truncated", "bad_header", "deleted"])
def test_a_corrupt_entry_is_dropped_and_counts_as_a_miss(tmp_path: Path, damage: str) -> None:
    cache = ResultCache(tmp_path, max_bytes=1 << 20)
    bad, good = key_of("bad"), key_of("good")
    cache.put(bad, META, b"\x00" * 64)
    cache.put(good, META, b"\x00" * 32)
    path = tmp_path / bad[:2] / f"{bad}.tts"
    if damage == "truncated":
        path.write_bytes(b"\x01")
    elif damage == "bad_header":
        path.write_bytes(b"\x03\x00\x00\x00\xc1\xc1\xc1" + b"\x00" * 64)  # 0xc1 is never valid msgpack
    else:
        path.unlink()
    assert cache.get(bad) is None
    assert not path.exists()
    assert cache.stats()["entries"] == 1 and cache.stats()["bytes"] == entry_bytes(META, b"\x00" * 32)
    assert (cache.stats()["hits"], cache.stats()["misses"]) == (0, 1)
    assert cache.get(good) == (META, b"\x00" * 32)


def test_reopening_rescans_the_folder_oldest_file_first(tmp_path: Path) -> None:
    pcm = b"\x00" * 1000
    size = entry_bytes(META, pcm)
    first = ResultCache(tmp_path, max_bytes=1 << 20)
    keys = [key_of(name) for name in "abcd"]
    for age, key in zip((40, 10, 30, 20), keys, strict=True):  # LRU order by mtime: a, c, d, b
        first.put(key, META, pcm)
        stamp = 1_700_000_000 - age
        os.utime(tmp_path / key[:2] / f"{key}.tts", (stamp, stamp))
    (tmp_path / keys[0][:2] / ".stray.123.tmp").write_bytes(b"half a file")  # an interrupted write
    again = ResultCache(tmp_path, max_bytes=1 << 20)
    assert (again.stats()["entries"], again.stats()["bytes"]) == (4, 4 * size)
    smaller = ResultCache(tmp_path, max_bytes=2 * size)  # opening with a lower limit evicts the oldest two
    assert (smaller.stats()["entries"], smaller.stats()["bytes"]) == (2, 2 * size)
    b, d = keys[1], keys[3]
    assert [k for k in keys if smaller.get(k) is not None] == [b, d]
    assert sorted(files(tmp_path)) == sorted(tmp_path / k[:2] / f"{k}.tts" for k in (b, d))


def test_clear_empties_the_cache_and_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    cache = ResultCache(folder, max_bytes=1 << 20)
    for name in "abc":
        cache.put(key_of(name), META, b"\x00" * 10)
    cache.clear()
    assert folder.is_dir() and list(folder.iterdir()) == []
    assert (cache.stats()["entries"], cache.stats()["bytes"]) == (0, 0)
    assert cache.get(key_of("a")) is None
    cache.put(key_of("a"), META, b"\x00" * 10)  # usable after a clear
    assert cache.get(key_of("a")) == (META, b"\x00" * 10)
