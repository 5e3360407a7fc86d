"""Key folders, principals and routing-id bindings of the broker's CURVE layer (auth.py), in process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tts_protocol.curve import CurveKeyError, generate, load_public

from tts_broker.auth import KeyFolder, Principal, can_see, is_loopback
from tts_broker.handlers import KeyBinding

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


def test_a_key_folder_follows_files_added_removed_and_replaced(tmp_path: Path) -> None:
    folder = tmp_path / "clients"
    public_a, _ = generate("a", folder)
    keys = KeyFolder(folder, "client")
    key_a = load_public(public_a)
    assert keys.lookup(key_a) == "a"
    public_b, _ = generate("b", tmp_path / "elsewhere")
    (folder / "b.key").write_bytes(public_b.read_bytes())
    assert keys.lookup(load_public(public_b)) == "b"
    public_a.unlink()
    assert keys.lookup(key_a) is None
    (folder / "broken.key").write_text("not a certificate")
    assert keys.lookup(load_public(public_b)) == "b", "one bad file does not lock the others out"
    os.rename(folder / "b.key", folder / "renamed.key")
    assert keys.lookup(load_public(public_b)) == "renamed"


def test_key_files_are_never_overwritten_and_names_are_checked(tmp_path: Path) -> None:
    public, secret = generate("gpu-1", tmp_path)
    assert oct(secret.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(CurveKeyError, match="exists"):
        generate("gpu-1", tmp_path)
    with pytest.raises(CurveKeyError, match="bad key name"):
        generate("../evil", tmp_path)


def test_principals_and_visibility() -> None:
    admin, alice = Principal.of("admin:ops"), Principal.of("client:alice")
    assert Principal.of(None) is None and admin is not None and admin.admin and alice is not None
    assert can_see(None, "alice") and can_see(admin, "alice") and can_see(alice, "alice")
    assert not can_see(alice, "bob") and not can_see(alice, None)


@pytest.mark.parametrize(("endpoint", "loopback"), [
    ("tcp://127.0.0.1:5555", True), ("tcp://[::1]:5555", True), ("tcp://localhost:1", True),
    ("ipc:///tmp/x", True), ("tcp://0.0.0.0:5555", False), ("tcp://*:5555", False), ("tcp://10.0.0.2:1", False),
])
def test_loopback_endpoints(endpoint: str, loopback: bool) -> None:
    assert is_loopback(endpoint) is loopback


def test_a_routing_id_stays_bound_to_its_first_key() -> None:
    binding = KeyBinding("worker", max_ids=2)
    assert binding.check(b"w-1", "worker:a") and binding.check(b"w-1", "worker:a")
    assert not binding.check(b"w-1", "worker:b")
    assert binding.check(b"w-2", "worker:b") and binding.check(b"w-3", "worker:b")
    assert binding.check(b"w-1", "worker:b"), "the oldest binding was forgotten (bounded)"


def test_the_journal_keeps_job_owners(tmp_path: Path) -> None:
    import time

    from tts_protocol.constants import Priority
    from tts_protocol.messages import Submit

    from tts_broker.jobs import Job
    from tts_broker.journal import Journal

    journal = Journal(tmp_path / "journal.sqlite3")
    req = Submit(job_id="owned-1", text="hello")
    journal.record(Job(request=req, priority=Priority(req.priority), model=None, accepted_at=time.monotonic(),
                       accepted_wall=time.time(), owner="alice"), new=True)
    journal.flush()
    journal.close()
    restored = Journal(tmp_path / "journal.sqlite3").restore(retain_s=60)
    assert [(job.job_id, job.owner) for job in restored.unfinished] == [("owned-1", "alice")]


def test_the_result_cache_takes_results_only_from_trusted_workers(tmp_path: Path) -> None:
    import time

    from tts_protocol.constants import Priority
    from tts_protocol.messages import Ready, Submit, WorkerResult

    from tts_broker.hooks import CacheHook
    from tts_broker.jobs import Job
    from tts_broker.workers import WorkerRecord

    hook = CacheHook(tmp_path / "cache", max_bytes=1 << 20)
    worker = WorkerRecord(identity=b"w-1", ready=Ready(worker_id="w-1", engine="tone", model="tone-v1"),
                          registered_at=0.0, last_seen=0.0, key="worker:revoked")
    body = WorkerResult(job_id="j", attempt=1, sample_rate=16000, deterministic=True)

    def finished(job_id: str) -> Job:
        req = Submit(job_id=job_id, text="same text", model="tone")
        job = Job(request=req, priority=Priority(req.priority), model="tone", accepted_at=time.monotonic())
        job.audio = b"\x00\x01" * 8
        return job

    hook.trusts = lambda w: w.key != "worker:revoked"
    hook.completed(finished("j1"), worker, body)
    hook.commit()  # the server's I/O step: queued writes reach the disk
    assert hook.lookup(finished("j2")) is None, "a result of an untrusted worker was cached"
    worker.key = "worker:gpu"
    hook.completed(finished("j3"), worker, body)
    hook.commit()
    hit = hook.lookup(finished("j4"))
    assert hit is not None and hit.pcm == b"\x00\x01" * 8
