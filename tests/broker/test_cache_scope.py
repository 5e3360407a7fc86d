"""Attacks on the result cache (issue 19, items 15 and 17), in-process on a real folder.

15: under CURVE one client key must not hit (and so confirm by timing) what another key had spoken, unless
both opted into a shared scope; RELOAD of one model keeps the other models' entries.
17: an unwritable cache folder costs one log line per interval, never an exception per result.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional

import pytest

from tts_protocol.constants import Priority
from tts_protocol.messages import Ready, Submit, WorkerResult

from tts_broker.hooks import CacheHook
from tts_broker.jobs import Job
from tts_broker.result_cache import ResultCache, cache_key
from tts_broker.workers import WorkerRecord

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]

BODY = WorkerResult(job_id="j", attempt=1, sample_rate=16000, deterministic=True)


def worker(engine: str = "tone", model: str = "tone-v1") -> WorkerRecord:
    return WorkerRecord(identity=b"w-1", ready=Ready(worker_id="w-1", engine=engine, model=model),
                        registered_at=0.0, last_seen=0.0, key="worker:gpu")


def job(job_id: str, owner: Optional[str], *, text: str = "same text", model: str = "tone") -> Job:
    req = Submit(job_id=job_id, text=text, model=model)
    done = Job(request=req, priority=Priority(req.priority), model=model, accepted_at=time.monotonic(), owner=owner)
    done.audio = b"\x00\x01" * 8
    return done


def test_a_cache_hit_is_scoped_to_the_submitting_key(tmp_path: Path) -> None:
    hook = CacheHook(tmp_path / "cache", max_bytes=1 << 20)
    hook.completed(job("a1", "alice"), worker(), BODY)
    hook.commit()  # the server writes entries between turns
    assert hook.lookup(job("b1", "bob")) is None, "bob hit alice's result: he can tell what she had spoken"
    assert hook.lookup(job("a2", "alice")) is not None
    hook.completed(job("n1", None), worker(), BODY)  # without CURVE: one trust domain, as before
    hook.commit()
    assert hook.lookup(job("n2", None)) is not None


def test_keys_that_opt_in_share_hits_and_the_others_stay_apart(tmp_path: Path) -> None:
    hook = CacheHook(tmp_path / "cache", max_bytes=1 << 20, shared_keys=frozenset({"alice", "bob"}))
    hook.completed(job("a1", "alice"), worker(), BODY)
    hook.commit()  # the server writes entries between turns
    assert hook.lookup(job("b1", "bob")) is not None
    assert hook.lookup(job("m1", "mallory")) is None
    everyone = CacheHook(tmp_path / "all", max_bytes=1 << 20, shared_keys=frozenset({"*"}))
    everyone.completed(job("a1", "alice"), worker(), BODY)
    everyone.commit()  # the server writes entries between turns
    assert everyone.lookup(job("m1", "mallory")) is not None


def test_cache_key_scope_changes_the_key_and_none_keeps_the_old_one() -> None:
    plain = cache_key("Hello.", "default", {}, "piper:joe")
    assert cache_key("Hello.", "default", {}, "piper:joe", None) == plain
    scoped = {cache_key("Hello.", "default", {}, "piper:joe", s) for s in ("key:alice", "key:bob", "shared")}
    assert len(scoped) == 3 and plain not in scoped


def test_reload_of_one_model_keeps_the_other_models_entries_also_after_a_restart(tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    hook = CacheHook(folder, max_bytes=1 << 20)
    hook.completed(job("t", None, text="tone line", model="tone"), worker("tone", "tone-v1"), BODY)
    hook.commit()  # the server writes entries between turns
    hook.completed(job("p", None, text="piper line", model="piper:joe"), worker("piper", "joe"), BODY)
    hook.commit()  # the server writes entries between turns
    hook.completed(job("q", None, text="amy line", model="piper:amy"), worker("piper", "amy"), BODY)
    hook.commit()  # the server writes entries between turns
    hook.reloaded("piper:joe")
    hook.commit()
    assert hook.lookup(job("p2", None, text="piper line", model="piper:joe")) is None
    assert hook.lookup(job("t2", None, text="tone line", model="tone")) is not None
    assert hook.lookup(job("q2", None, text="amy line", model="piper:amy")) is not None
    again = CacheHook(folder, max_bytes=1 << 20)  # the producers are read back from the entries' headers
    again.reloaded("piper")  # the engine's routing key: every piper model
    assert again.lookup(job("q3", None, text="amy line", model="piper:amy")) is None
    assert again.lookup(job("t3", None, text="tone line", model="tone")) is not None
    again.reloaded(None)
    again.commit()
    assert again.cache.stats()["entries"] == 0


def test_an_unwritable_cache_folder_logs_once_per_interval_and_never_raises(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "cache"
    cache = ResultCache(folder, max_bytes=1 << 20)
    folder.rmdir()
    folder.write_bytes(b"")  # a file where the folder was: mkdir fails even for root (tests run as root in CI)
    caplog.set_level(logging.WARNING, logger="tts_broker.result_cache")
    for n in range(50):
        cache.put(cache_key(f"line {n}", None, {}, "tone") or "", {"engine": "tone", "model": "v1"}, b"\x00" * 8)
    assert cache.stats()["write_errors"] == 50 and cache.stats()["entries"] == 0
    lines = [r for r in caplog.records if r.name == "tts_broker.result_cache"]
    assert len(lines) == 1 and lines[0].exc_info is None and "cannot store" in lines[0].getMessage()
