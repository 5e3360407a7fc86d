"""CURVE on both broker ports (issue 10): allowlists, key folders re-read live, roles, key-bound routing ids.

Real broker and worker processes, real TtsClients and scripted peers (tests/peers.py) with real CURVE keys.
"A peer gets nothing" is shown by positive events: the peer's own socket monitor reports the refused
handshake, or a sentinel answered in order shows the broker handled what it sent and answered nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import zmq

from tts_protocol import Command
from tts_protocol.curve import REFUSED, CurveKeys, generate

from tests.conftest import BrokerProc, Proc, wait_for
from tests.peers import RawClient, RawWorker
from tts_client import AsyncTtsClient, BrokerUnavailable, TtsClient

pytestmark = pytest.mark.timeout(120)


@dataclasses.dataclass
class Keys:
    root: Path

    def folder(self, name: str) -> Path:
        return self.root / name

    def make(self, name: str, folder: str) -> Path:
        """A key pair in root/folder; returns the secret file."""
        return generate(name, self.root / folder)[1]

    def curve(self, secret: Path) -> CurveKeys:
        return CurveKeys.from_files(secret, self.root / "broker" / "broker.key")


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    k = Keys(tmp_path / "keys")
    k.make("broker", "broker")
    for folder in ("clients", "workers", "admins", "unlisted"):
        k.folder(folder).mkdir(parents=True)
    return k


@pytest.fixture
def curve_broker(broker_factory: Callable[..., BrokerProc], keys: Keys) -> BrokerProc:
    return broker_factory("--no-journal", "--no-cache", "--curve-secret", str(keys.root / "broker/broker.key_secret"),
                          "--client-keys", str(keys.folder("clients")), "--worker-keys", str(keys.folder("workers")),
                          "--admin-keys", str(keys.folder("admins")))


def client(broker: BrokerProc, keys: Keys, secret: Path | None, **kw: object) -> TtsClient:
    if secret is None:
        return TtsClient(broker.frontend, **kw)  # type: ignore[arg-type]
    return TtsClient(broker.frontend, curve_secret=str(secret), broker_key=str(keys.root / "broker/broker.key"),
                     **kw)  # type: ignore[arg-type]


def wait_for_quietly(condition: Callable[[], bool], timeout_s: float) -> bool:
    """True once `condition` holds, False if it did not within timeout_s."""
    try:
        wait_for(condition, timeout_s)
    except AssertionError:
        return False
    return True


def refused_by_monitor(peer: RawClient | RawWorker) -> None:
    assert peer.watch is not None
    wait_for(peer.watch.poll, 20, what="EVENT_HANDSHAKE_FAILED_AUTH on the peer's socket")
    assert peer.sock.poll(0) == 0, "a refused peer received a message"


def test_peers_without_a_listed_key_are_refused_and_listed_ones_work(curve_broker: BrokerProc, keys: Keys,
                                                                      start_worker: Callable[..., Proc],
                                                                      ctx: zmq.Context) -> None:
    app = keys.make("app", "clients")
    gpu = keys.make("gpu", "workers")
    stranger = keys.make("stranger", "unlisted")
    broker_key = str(keys.root / "broker/broker.key")

    # A worker with an unlisted key: its log names the cause; the broker never registers it.
    bad_worker = start_worker(curve_broker, extra_args=["--single", "--curve-secret", str(stranger),
                                                        "--broker-key", broker_key])
    wait_for(lambda: REFUSED in bad_worker.log(), 30, what="the worker's log reporting the refused key")

    # A client with an unlisted key: BrokerUnavailable saying why, at once rather than after its timeout.
    with client(curve_broker, keys, stranger, request_timeout_s=30.0) as c:
        with pytest.raises(BrokerUnavailable, match="CURVE handshake refused by the broker"):
            c.ping()

    # No key at all (plain NULL mechanism) on both ports: the handshake fails, nothing arrives.
    plain = RawClient(ctx, curve_broker.frontend, best_effort=True)
    monitor = plain.sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_SUCCEEDED)
    plain.send(Command.PING, {"req_id": "p1"})
    assert monitor.poll(20_000), "no handshake event for a peer without a key"
    assert zmq.utils.monitor.recv_monitor_message(monitor)["event"] == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    plain.sock.disable_monitor()
    monitor.close(linger=0)  # the `ctx` fixture fails a test that leaves a socket open
    plain_worker = RawWorker(ctx, curve_broker.backend, best_effort=True)
    unlisted_worker = RawWorker(ctx, curve_broker.backend, curve=keys.curve(stranger), best_effort=True)
    refused_by_monitor(unlisted_worker)

    # Listed keys work end to end: a real worker and a real client.
    # (under a supervisor: it passes the keys to its worker process)
    start_worker(curve_broker, extra_args=["--curve-secret", str(gpu), "--broker-key", broker_key])
    with client(curve_broker, keys, app) as c:
        wait_for(lambda: len(c.broker_status().workers) == 1, 30, what="the keyed worker registered")
        result = c.synthesize("hello over curve", timeout_s=30)
        assert result.num_frames > 0
        assert result.meta.worker_id.startswith("gpu/"), "clients see the worker's key name, not its routing id"
        (seen,) = c.broker_status().workers  # the refused workers never registered
        assert seen.host == "" and seen.pid == 0 and not seen.worker_id.startswith("w-")
    assert plain_worker.sock.poll(0) == 0 and unlisted_worker.sock.poll(0) == 0
    assert "is in no allowlist" in curve_broker.log()


def test_key_folders_are_read_again_without_a_restart(curve_broker: BrokerProc, keys: Keys,
                                                      ctx: zmq.Context) -> None:
    app = keys.make("app", "clients")
    with client(curve_broker, keys, app) as c:
        c.ping()
        (keys.folder("clients") / "app.key").unlink()  # revoke
        c.ping()  # the connection made before stays up (docs/security.md: revocation)
    # The next connection with the removed key is refused.
    again = RawClient(ctx, curve_broker.frontend, curve=keys.curve(app), best_effort=True)
    again.send(Command.PING, {"req_id": "p1"})
    refused_by_monitor(again)
    # A key added while the broker runs is accepted at once.
    late = keys.make("late", "unlisted")
    (keys.folder("clients") / "late.key").write_bytes((keys.folder("unlisted") / "late.key").read_bytes())
    with client(curve_broker, keys, late) as c:
        assert c.ping().broker_id

    async def ping_async() -> str:  # AsyncTtsClient takes the same settings
        async with AsyncTtsClient(curve_broker.frontend, curve_secret=str(late),
                                  broker_key=str(keys.root / "broker/broker.key")) as ac:
            return (await ac.ping()).broker_id

    assert asyncio.run(ping_async())
    assert curve_broker.proc is not None and curve_broker.starts == 1


def test_jobs_belong_to_their_client_key_and_admin_commands_need_an_admin_key(curve_broker: BrokerProc,
                                                                              keys: Keys, ctx: zmq.Context) -> None:
    alice = RawClient(ctx, curve_broker.frontend, curve=keys.curve(keys.make("alice", "clients")))
    bob = RawClient(ctx, curve_broker.frontend, curve=keys.curve(keys.make("bob", "clients")))
    ops = RawClient(ctx, curve_broker.frontend, curve=keys.curve(keys.make("ops", "admins")))
    worker = RawWorker(ctx, curve_broker.backend, curve=keys.curve(keys.make("gpu", "workers")))
    wait_for(lambda: len(ops.status().workers) == 1, 20, what="the worker registered")

    job_id = "alice-" + secrets.token_hex(4)
    alice.submit(job_id, "alice's private text")
    alice.recv_until(Command.ACCEPTED, skip=())
    job = worker.next_job()
    assert job.job_id == job_id

    def forbidden(msg_command: Command, **fields: object) -> None:
        bob.send(msg_command, fields)
        reply = bob.recv()
        assert reply.command is Command.ERROR and reply.body.code == "forbidden", reply

    forbidden(Command.JOB_STATUS, req_id="s1", job_id=job_id)
    forbidden(Command.CANCEL, job_id=job_id)
    forbidden(Command.RETRY, req_id="r1", job_id=job_id)
    forbidden(Command.SUBMIT, job_id=job_id, text="resubmitted by someone else")
    forbidden(Command.RELOAD, req_id="l1")
    listed = bob.request(Command.JOBS, Command.JOBS_REPLY, limit=100).body.jobs
    assert job_id not in [j.job_id for j in listed]
    seen_by_bob = bob.status().workers[0]
    assert seen_by_bob.worker_id != worker.worker_id and seen_by_bob.host == "" and seen_by_bob.pid == 0
    bob.assert_quiet()

    # The owner sees its job without routing ids; the admin sees everything and may act on it.
    mine = alice.request(Command.JOB_STATUS, Command.JOB_STATUS_REPLY, job_id=job_id).body.job
    assert mine.state == "running" and mine.worker_id is None and mine.workers == []
    assert [j.job_id for j in alice.request(Command.JOBS, Command.JOBS_REPLY).body.jobs] == [job_id]
    assert job_id in [j.job_id for j in ops.request(Command.JOBS, Command.JOBS_REPLY).body.jobs]
    assert ops.status().workers[0].worker_id == worker.worker_id
    assert ops.request(Command.RELOAD, Command.RELOAD_REPLY, model="tone").body.workers == 1
    worker.recv_until(Command.B_RELOAD)
    ops.send(Command.CANCEL, {"job_id": job_id})
    assert ops.recv_until(Command.ERROR).body.code == "cancelled"
    assert alice.recv_until(Command.ERROR).body.code == "cancelled"
    worker.recv_until(Command.B_CANCEL)
    # The job's audio never reached bob: the resubmission was refused above and nothing else came.
    bob.assert_quiet()


def test_a_peer_reusing_a_workers_routing_id_gets_nothing(curve_broker: BrokerProc, keys: Keys,
                                                          ctx: zmq.Context) -> None:
    alice = RawClient(ctx, curve_broker.frontend, curve=keys.curve(keys.make("alice", "clients")))
    ops = RawClient(ctx, curve_broker.frontend, curve=keys.curve(keys.make("ops", "admins")))
    worker = RawWorker(ctx, curve_broker.backend, curve=keys.curve(keys.make("gpu", "workers")))
    wait_for(lambda: len(ops.status().workers) == 1, 20, what="the worker registered")
    copied = ops.status().workers[0].worker_id.encode()  # what an admin view (only) shows
    rogue_key = keys.curve(keys.make("rogue", "workers"))  # even an allowed worker key

    # While the worker is connected, ROUTER_HANDOVER is off: the copy cannot take its pipe over.
    rogue = RawWorker(ctx, curve_broker.backend, curve=rogue_key, identity=copied, best_effort=True)
    alice.submit("j1", "text for the real worker")
    job = worker.next_job()
    rogue.result(job, pcm=b"\x7f\x7f" * 8)  # a forged answer for the worker's lease
    worker.result(job, pcm=b"\x00\x01" * 8)
    result = alice.recv_until(Command.RESULT)
    assert result.body.job_id == "j1" and bytes(result.payload) == b"\x00\x01" * 8
    worker.assert_quiet(via=ops)
    assert rogue.sock.poll(0) == 0

    # Once the worker left, a connection with another key under its routing id is still dropped unanswered.
    worker.send(Command.W_DISCONNECT, {"reason": "bye"})
    wait_for(lambda: ops.status().workers == [], 20, what="the worker gone")
    worker.close()
    rogue.close()
    # libzmq keeps a connection that arrives while the old one still holds the routing id (handover off)
    # as an anonymous pipe it never reads: until the broker has seen the worker's socket close, a new
    # connection may be ignored outright. So connect again until one is read (the broker logs the drop).
    late: RawWorker | None = None
    marker = "bound to key worker:gpu but arrived from key worker:rogue"

    def reconnect_and_heartbeat() -> bool:
        nonlocal late
        if late is not None:
            late.close()
        late = RawWorker(ctx, curve_broker.backend, curve=rogue_key, identity=copied, best_effort=True)
        late.heartbeat()
        return wait_for_quietly(lambda: marker in curve_broker.log(), 1.0)

    wait_for(reconnect_and_heartbeat, 30, interval_s=0.0, what="the broker dropping the copied id's heartbeat")
    assert late is not None
    alice.submit("j2", "nobody may read this")
    alice.recv_until(Command.ACCEPTED, skip=())
    late.heartbeat()
    late.send(Command.W_READY, late.ready.to_wire())
    wait_for(lambda: curve_broker.log().count(marker) >= 3, 20, what="the later messages dropped too")
    alice.assert_quiet()
    assert ops.status().workers == [], "the copied routing id registered"
    assert late.sock.poll(0) == 0, "the copied routing id received something"


def test_no_curve_on_a_public_address_warns_loudly(broker_factory: Callable[..., BrokerProc]) -> None:
    exposed = broker_factory("--no-journal", "--no-cache", start=False)
    exposed.frontend = "tcp://0.0.0.0:*"
    exposed.start()
    assert "SECURITY: tcp://0.0.0.0:" in exposed.log() and "CURVE is off" in exposed.log()
    with TtsClient(exposed.frontend.replace("0.0.0.0", "127.0.0.1")) as c:
        assert c.ping().broker_id  # without CURVE everything works as before


def test_the_tts_cli_makes_keys_and_takes_them_as_global_options(curve_broker: BrokerProc, keys: Keys,
                                                                  tmp_path: Path) -> None:
    def tts(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "tts_client", *args], capture_output=True, text=True,
                              timeout=60)

    made = tts("keys", "generate", "cli-user", "--dir", str(tmp_path / "mine"))
    assert made.returncode == 0, made.stderr
    assert tts("keys", "generate", "cli-user", "--dir", str(tmp_path / "mine")).returncode == 2  # never overwrites
    common = ["--broker", curve_broker.frontend, "--curve-secret", str(tmp_path / "mine/cli-user.key_secret"),
              "--broker-key", str(keys.root / "broker/broker.key")]
    refused = tts(*common, "status")
    assert refused.returncode == 3 and REFUSED in refused.stderr, refused.stderr
    (keys.folder("clients") / "cli-user.key").write_bytes((tmp_path / "mine/cli-user.key").read_bytes())
    allowed = tts(*common, "status")
    assert allowed.returncode == 0, allowed.stderr


# ---- mistakes name themselves (issue 19, item 7) ------------------------------------------------------


def test_curve_mistakes_say_what_is_wrong_not_not_answering(curve_broker: BrokerProc, keys: Keys,
                                                            start_worker: Callable[..., Proc]) -> None:
    from tts_protocol.curve import BAD_BROKER_KEY, NEEDS_CURVE

    app = keys.make("app", "clients")
    keys.make("imposter", "unlisted")
    wrong_broker_key = str(keys.folder("unlisted") / "imposter.key")
    # A client without keys at a CURVE port: told CURVE is required, at once (not after request_timeout_s).
    with client(curve_broker, keys, None, request_timeout_s=30.0) as c:
        with pytest.raises(BrokerUnavailable, match="this broker requires CURVE"):
            c.ping()
    # A client whose --broker-key is not the broker's public key.
    with TtsClient(curve_broker.frontend, curve_secret=str(app), broker_key=wrong_broker_key,
                   request_timeout_s=30.0) as c:
        with pytest.raises(BrokerUnavailable, match="is --broker-key the broker's public key"):
            c.ping()
    # A worker without keys says so in its log, instead of "send queue full" for ever.
    keyless = start_worker(curve_broker, extra_args=["--single"])
    wait_for(lambda: NEEDS_CURVE in keyless.log(), 30, what="the keyless worker's log naming CURVE")
    wrong = start_worker(curve_broker, extra_args=["--single", "--curve-secret", str(keys.make("gpu", "workers")),
                                                   "--broker-key", wrong_broker_key])
    wait_for(lambda: BAD_BROKER_KEY in wrong.log(), 30, what="the worker's log naming --broker-key")


def test_a_secret_key_in_an_allowlist_folder_stops_the_broker(keys: Keys, tmp_path: Path) -> None:
    keys.make("app", "clients")  # the old README recipe: the key pair made inside the allowlist
    run = subprocess.run([sys.executable, "-m", "tts_broker", "--frontend", "tcp://127.0.0.1:*", "--backend",
                          "tcp://127.0.0.1:*", "--state-dir", str(tmp_path / "state"), "--curve-secret",
                          str(keys.root / "broker/broker.key_secret"), "--client-keys", str(keys.folder("clients")),
                          "--worker-keys", str(keys.folder("workers"))], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "app.key_secret" in lines[0] and "Traceback" not in run.stderr, run.stderr


def test_tts_at_the_worker_port_or_an_unresolvable_host_says_so(broker: BrokerProc) -> None:
    def tts(url: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "tts_client", "--broker", url, *args], capture_output=True,
                              text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "NO_COLOR": "1"})

    run = tts(broker.backend, "ping")
    assert run.returncode != 0 and "worker port" in run.stderr and broker.frontend in run.stderr, run.stderr
    run = tts(broker.backend, "say", "hello")
    assert run.returncode != 0 and "worker port" in run.stderr, run.stderr
    run = tts("tcp://no..such..host:5555", "ping")
    assert run.returncode == 3 and "does not resolve" in run.stderr and "Traceback" not in run.stderr, run.stderr


def test_settings_errors_are_one_line(tmp_path: Path) -> None:
    for argv in (["-m", "tts_broker", "--max-queue", "-5", "--state-dir", str(tmp_path)],
                 ["-m", "tts_worker", "--concurrency", "0", "--broker", "tcp://127.0.0.1:1"]):
        run = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=60)
        assert run.returncode == 2, run.stderr
        text = run.stderr.strip()
        assert "errors.pydantic.dev" not in text and "Traceback" not in text, text
        said = [line for line in text.splitlines() if line.strip() and not line.startswith(("Usage:", "Try "))]
        assert len(said) == 1, text


def test_a_client_routing_id_taken_by_another_key_gets_no_replies(curve_broker: BrokerProc, keys: Keys,
                                                                   ctx: zmq.Context) -> None:
    """Replies are bound to the key as well as the routing id: after alice's connection closed, mallory (another
    allowed key) connecting under alice's routing id receives none of alice's PARTIAL/RESULT; alice gets them
    when she is back with her id and key."""
    alice_key = keys.curve(keys.make("alice", "clients"))
    mallory_key = keys.curve(keys.make("mallory", "clients"))
    ops = RawClient(ctx, curve_broker.frontend, curve=keys.curve(keys.make("ops", "admins")))
    worker = RawWorker(ctx, curve_broker.backend, curve=keys.curve(keys.make("gpu", "workers")))
    wait_for(lambda: len(ops.status().workers) == 1, 20, what="the worker registered")
    alice = RawClient(ctx, curve_broker.frontend, curve=alice_key, identity=b"alice")
    alice.submit("j1", "only alice may hear this", stream=True)
    alice.recv_until(Command.ACCEPTED, skip=())
    job = worker.next_job()
    alice.close()

    # mallory connects under "alice". Until the broker has seen alice's connection close, libzmq keeps a
    # connection under a taken id as an anonymous pipe (handover off), so connect until one holds the id: its
    # one probe is dropped unanswered (KeyBinding, logged). From then on mallory only receives.
    marker = "bound to key client:alice but arrived from key client:mallory"
    mallory: RawClient | None = None

    def take_alices_id() -> bool:
        nonlocal mallory
        if mallory is not None:
            mallory.close()
        seen = curve_broker.log().count(marker)
        mallory = RawClient(ctx, curve_broker.frontend, curve=mallory_key, identity=b"alice", best_effort=True)
        mallory.send(Command.PING, {"req_id": "probe"})
        return wait_for_quietly(lambda: curve_broker.log().count(marker) > seen, 1.0)

    wait_for(take_alices_id, 30, interval_s=0.0, what="mallory's connection holding alice's routing id")
    assert mallory is not None
    worker.send(Command.W_PARTIAL, {"job_id": job.job_id, "attempt": job.attempt, "seq": 0, "sample_rate": 16000},
                b"\x05\x06" * 8)
    worker.result(job, pcm=b"\x01\x02" * 8)
    wait_for(lambda: ops.request(Command.JOB_STATUS, Command.JOB_STATUS_REPLY, job_id="j1").body.job.state == "done",
             20, what="the job done")
    ops.assert_quiet()  # two more turns of the loop: what the RESULT caused has been sent
    assert mallory.sock.poll(500) == 0, f"mallory received {mallory.recv().command.name} meant for alice"
    mallory.close()

    # alice is back with her routing id and key: what was withheld comes first, then the answer to her PING.
    # (A connection that arrives before the broker saw mallory's close is anonymous and eats the PING: retry.)
    got: list[Any] = []

    def alice_back() -> bool:
        nonlocal alice
        alice.close()
        alice = RawClient(ctx, curve_broker.frontend, curve=alice_key, identity=b"alice", best_effort=True)
        alice.send(Command.PING, {"req_id": "back"})
        got.clear()
        while alice.sock.poll(1000):
            got.append(alice.recv())
            if got[-1].command is Command.PONG:
                return True
        return False

    wait_for(alice_back, 30, interval_s=0.0, what="alice back under her routing id")
    assert [m.command for m in got] == [Command.PARTIAL, Command.RESULT, Command.PONG]
    assert bytes(got[0].payload) == b"\x05\x06" * 8
    assert got[1].body.job_id == "j1" and bytes(got[1].payload) == b"\x01\x02" * 8


def test_the_ready_file_says_ready_only_while_the_broker_takes_the_worker(
        curve_broker: BrokerProc, keys: Keys, start_worker: Callable[..., Proc], tmp_path: Path) -> None:
    """--ready-file (the Kubernetes readiness probe): absent while the broker refuses the worker's key (the loop
    still turns: --health-file is fresh), there once the key is listed, gone when the worker drains."""
    secret = keys.make("gpu", "unlisted")
    health, ready = tmp_path / "worker.alive", tmp_path / "worker.ready"
    ready.write_text("")  # a stale one from before a restart must not say ready
    worker = start_worker(curve_broker, extra_args=[
        "--single", "--curve-secret", str(secret), "--broker-key", str(keys.root / "broker/broker.key"),
        "--health-file", str(health), "--ready-file", str(ready)], env={"TTS_WORKER_RECONNECT_MAX_S": "1"})
    wait_for(lambda: REFUSED in worker.log() and health.exists(), 30, what="the refused worker's loop turning")
    assert not ready.exists(), "a worker whose key the broker refuses says it is ready"
    (keys.folder("unlisted") / "gpu.key").rename(keys.folder("workers") / "gpu.key")  # re-read live
    wait_for(ready.exists, 30, what="the ready file once the key is listed")
    touched = ready.stat().st_mtime_ns
    wait_for(lambda: ready.exists() and ready.stat().st_mtime_ns > touched, 10, what="the ready file touched again")
    assert worker.stop(30) == 0
    assert not ready.exists() and health.exists()
