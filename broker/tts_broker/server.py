"""The broker daemon: two ROUTER sockets, one poll loop, the I/O the core asks for, and the group commit.

Single-threaded on purpose: all state lives in the sans-IO core (core.py) and is touched from this loop only,
so there are no locks. Each turn reads waiting messages and hands them to the core, sends what it put in the
outbox, performs the I/O it set aside (result cache reads), lets it run its timers and dispatch (`tick`),
commits the hooks once (journal, cache writes), and only then sends the messages that promise durability
(ACCEPTED, RESULT, JOB).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import time
from pathlib import Path
from typing import Any, Callable, Optional

import zmq

from tts_protocol import ProtocolError, Side
from tts_protocol.codec import Message, RouterPort, routing_id, user_id
from tts_protocol.messages import Ready

from tts_broker import __version__
from tts_broker.adoption import Adoption
from tts_broker.auth import CLIENT_DOMAIN, WORKER_DOMAIN, CurveServer, Principal, warn_if_exposed
from tts_broker.backlog import ClientBacklog
from tts_broker.client_links import ClientLinks, source_fd
from tts_broker.core import BrokerCore
from tts_broker.fdlimit import DescriptorHook
from tts_broker.hooks import CacheHook, Hook, JournalHook
from tts_broker.httpd import HttpServer
from tts_broker.journal import JournalUnavailable
from tts_broker.leader_post import LeaderPost
from tts_broker.metrics import MetricsHook
from tts_broker.outbox import Outgoing
from tts_broker.settings import BrokerSettings
from tts_broker.statedir import LOCK_NAME, StateLock
from tts_broker.status import BrokerInfo
from tts_broker.wrong_port import WrongPort

log = logging.getLogger(__name__)

_BATCH = 256  # messages read from one socket before looking at the other
_POLL_MS = 50  # the core's timers run about this often (core.TICK_S)
_BACKLOG_RETRY_MS = 1
_BACKLOG_ACTIVE_S = 0.1  # a backlog that moved (or started) this recently is retried every _BACKLOG_RETRY_MS


def build_hooks(settings: BrokerSettings, leader: Optional[LeaderPost] = None) -> list[Hook]:
    """The journal and the result cache, as the settings ask."""
    hooks: list[Hook] = [DescriptorHook()]
    if leader is not None:
        hooks.append(leader.hook)
    journal_file = settings.journal_file()
    if journal_file is not None:
        hooks.append(JournalHook(journal_file, synchronous=settings.journal_sync,
                                 result_ttl_s=settings.result_ttl_s, dead_letter_ttl_s=settings.dead_letter_ttl_s,
                                 max_audio_bytes=settings.journal_max_audio_mb * 1024 * 1024,
                                 accept_loss=settings.accept_journal_loss,
                                 lock_file=Path(settings.state_dir) / LOCK_NAME))
    cache_folder = settings.cache_folder()
    if cache_folder is not None:
        hooks.append(CacheHook(cache_folder, max_bytes=settings.cache_max_mb * 1024 * 1024,
                               shared_keys=settings.cache_shared()))
    return hooks


class Broker:
    """Queues jobs from clients and leases them to workers (PROTOCOL.md)."""

    def __init__(self, settings: BrokerSettings, *, context: Optional[zmq.Context] = None,
                 clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time) -> None:
        """`clock` (monotonic seconds) and `wall_clock` are what the core is told the time is: tests that run the
        loop in a thread (tests/conftest.py, inproc_broker) pass a fake one to step timers without waiting."""
        self.settings = settings
        self.clock, self.wall_clock = clock, wall_clock
        self.info = BrokerInfo(broker_id="b-" + secrets.token_hex(6), version=__version__, started_at=clock())
        # CURVE gets a context of its own: one ZAP handler per context, and brokers in one process (tests)
        # must not share it.
        self._own_ctx = context is None and settings.curve
        self.ctx = context or (zmq.Context() if settings.curve else zmq.Context.instance())
        # Claim the state dir before opening the journal: a second broker must not even read it.
        self.state_lock = StateLock(settings.lock_folders())
        self.state_lock.acquire()
        self.curve: Optional[CurveServer] = None
        self.leader: Optional[LeaderPost] = None
        self.metrics: Optional[MetricsHook] = None
        try:
            if settings.curve:
                assert settings.curve_secret and settings.client_keys and settings.worker_keys
                self.curve = CurveServer.start(self.ctx, secret_file=settings.curve_secret,
                                               client_keys=settings.client_keys, worker_keys=settings.worker_keys,
                                               admin_keys=settings.admin_keys)
            # With a PostgreSQL journal, a standby waits here (ports not bound) until it leads.
            self.leader = LeaderPost.take(settings) if settings.journal_url else None
            hooks = build_hooks(settings, self.leader)
            if settings.http is not None:
                self.metrics = MetricsHook(pinned_models=settings.metrics_pinned())
                hooks.append(self.metrics)  # after the journal and cache: its snapshot includes what they report
            self.backlog = ClientBacklog(max_bytes=settings.client_backlog_max_bytes)
            hooks.append(self.backlog)  # for its status fields
            # Under CURVE, replies go to a client id only while its key's connection holds it (client_links.py).
            self.links: Optional[ClientLinks] = None
            if settings.curve:
                self.links = ClientLinks(max_withheld_bytes=settings.client_backlog_max_bytes)
                hooks.append(self.links)
            self.core = BrokerCore(settings, hooks, info=self.info)
            if self.metrics is not None:
                self.metrics.attach(self.core, self.info)
            self.core.restore()
            self.adoption = Adoption(self.core.life,
                                     grace_s=2 * settings.heartbeat_interval_s * settings.heartbeat_liveness)
            if self.leader is not None:  # a takeover: surviving workers may still run what the journal shows running
                self.adoption.hold(self.leader.hook.restored_running, self.clock())
            if self.curve is not None:
                curve = self.curve
                for hook in self.core.hooks:
                    if isinstance(hook, CacheHook):
                        hook.trusts = lambda worker: curve.worker_allowed(worker.key)
            self.clients = RouterPort(self._router(settings.frontend, settings.frontend_max_msg_bytes, CLIENT_DOMAIN,
                                                   sndhwm=settings.client_sndhwm), Side.CLIENT)
            self.workers = RouterPort(self._router(settings.backend, settings.backend_max_msg_bytes, WORKER_DOMAIN),
                                      Side.WORKER)
            if self.links is not None:
                self.links.watch(self.clients.sock)
        except BaseException:
            if self.curve is not None:
                self.curve.stop()
            if self.leader is not None:
                self.leader.close()
            self.state_lock.release()
            raise
        self._journal_retry_at = 0.0
        self.frontend_endpoint = self.clients.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.backend_endpoint = self.workers.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        if self.curve is None:
            warn_if_exposed([self.frontend_endpoint, self.backend_endpoint])
        self.wrong_port = WrongPort(frontend=self.frontend_endpoint, backend=self.backend_endpoint)
        self._stop_now = False
        self.http: Optional[HttpServer] = None
        self.http_url: Optional[str] = None
        if self.metrics is not None and settings.http is not None:
            self.metrics.tick(clock())  # /api/status has a snapshot from the first request on
            self.http = HttpServer(self.metrics, settings.http, tokens=settings.http_tokens(),
                                   max_connections=settings.http_max_connections,
                                   idle_timeout_s=settings.http_idle_timeout_s, curve=settings.curve)
            try:
                self.http_url = self.http.start()
            except OSError:
                self.close()
                raise
            self.info.dashboard = self.http_url  # `tts status --json` and /api/status name the dashboard

    @property
    def broker_id(self) -> str:
        return self.info.broker_id

    def _router(self, endpoint: str, max_msg_bytes: int, zap_domain: str, *, sndhwm: int = 100_000) -> zmq.Socket:
        sock = self.ctx.socket(zmq.ROUTER)
        if self.curve is not None:
            self.curve.secure(sock, zap_domain)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        # Without CURVE a reconnecting peer may take its routing id back at once. With CURVE, never: a
        # connection with another key must not take over a live peer's pipe (and with it, its jobs).
        sock.setsockopt(zmq.ROUTER_HANDOVER, 0 if self.curve is not None else 1)
        sock.setsockopt(zmq.LINGER, 500)
        sock.setsockopt(zmq.MAXMSGSIZE, max_msg_bytes)
        sock.setsockopt(zmq.SNDHWM, sndhwm)
        sock.setsockopt(zmq.RCVHWM, 100_000)
        sock.bind(endpoint)
        return sock

    # ---- process -----------------------------------------------------------------------------------

    def write_ready_file(self, path: str) -> None:
        info = {"frontend": self.frontend_endpoint, "backend": self.backend_endpoint, "pid": os.getpid(),
                "broker_id": self.broker_id, "http": self.http_url}
        target = Path(path)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(json.dumps(info))
        os.replace(tmp, target)

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.core.draining:
            log.warning("second signal %d: stopping now", signum)
            self._stop_now = True
        else:
            self.start_drain()

    def start_drain(self) -> None:
        self.core.start_drain(self.clock())

    def stop(self) -> None:
        """Leave the loop at its next turn (within one poll, 50 ms) without draining; safe from another thread."""
        self._stop_now = True

    # ---- the loop ----------------------------------------------------------------------------------

    def run(self) -> None:
        """Serve until drained or told to stop."""
        log.info("broker %s listening: clients %s, workers %s", self.broker_id, self.frontend_endpoint,
                 self.backend_endpoint)
        poller = zmq.Poller()
        poller.register(self.clients.sock, zmq.POLLIN)
        poller.register(self.workers.sock, zmq.POLLIN)
        core = self.core
        try:
            while not self._stop_now:
                # A client whose queue was full a moment ago usually reads again within a millisecond: retry
                # its backlog that soon, but a client that stays silent only costs a retry per tick.
                backlog_busy = self.backlog.active_since(time.monotonic() - _BACKLOG_ACTIVE_S)
                events = dict(poller.poll(_BACKLOG_RETRY_MS if backlog_busy else _POLL_MS))
                if self.leader is not None:  # after a freeze: step down before answering anything
                    self.leader.check(time.monotonic())
                if self.workers.sock in events:
                    self._drain(self.workers, self._on_worker_frames)
                if self.links is not None:  # read disconnects every turn: the monitor's queue stays short
                    self.links.poll()
                if self.clients.sock in events:
                    self._drain(self.clients, self._on_client_frames)
                now = self.clock()
                self._guarded(self._read_cache, now)
                self._guarded(core.tick, now)
                self._guarded(self._failover_tick, now)
                self._send(core.outbox.now)
                if self.backlog:
                    self._flush_backlog()
                if core.draining and core.drain_finished(now):
                    self._commit()
                    break
                self._commit()
        finally:
            self._shutdown()

    @staticmethod
    def _guarded(step: Callable[[float], None], now: float) -> None:
        """Run a timer or dispatch step; a bug in it is logged, never the end of the broker (issue 9)."""
        try:
            step(now)
        except Exception:
            log.exception("internal error in %s; broker keeps running", getattr(step, "__name__", "a step"))

    def _drain(self, port: RouterPort, handler: Callable[[list[Any]], None]) -> None:
        """Handle up to _BATCH waiting messages from one socket."""
        for _ in range(_BATCH):
            if self.leader is not None:  # a broker that froze mid-batch answers nothing more once it wakes
                self.leader.check(time.monotonic())
            frames = port.recv()
            if frames is None:
                return
            try:
                handler(frames)
            except Exception:  # a bug in a handler must not take the broker down
                log.exception("internal error while handling a message; broker keeps running")
            self._send(self.core.outbox.now)

    def _on_client_frames(self, frames: list[Any]) -> None:
        message: Message | ProtocolError
        if self.links is None:
            try:
                identity, message = self.clients.parse(frames)
            except ProtocolError as exc:
                identity, message = routing_id(frames), exc
                if self.wrong_port.worker_at_frontend(self.clients, frames):
                    return
            self.core.on_client(identity, None, message, self.clock(), self.wall_clock())
            return
        user = user_id(frames)  # before decoding: a malformed message is answered only under its bound key
        try:
            identity, message = self.clients.parse(frames)
        except ProtocolError as exc:
            identity, message = routing_id(frames), exc
            if self.wrong_port.worker_at_frontend(self.clients, frames):  # answers the sending connection only
                return
        if not self.core.on_client(identity, Principal.of(user), message, self.clock(), self.wall_clock()):
            return  # another key's connection under a bound id: it is not linked, it gets nothing
        withheld = self.links.seen(identity, source_fd(frames), user or "")
        if withheld:  # the id is back with its key: what waited for it goes before this message's replies
            self._send(withheld)

    def _on_worker_frames(self, frames: list[Any]) -> None:
        message: Message | ProtocolError
        key = user_id(frames) if self.curve is not None else None
        try:
            identity, message = self.workers.parse(frames)
        except ProtocolError as exc:
            identity, message = routing_id(frames), exc
            if self.core.workers.get(identity) is None and self.wrong_port.client_at_backend(self.workers, frames):
                return
        now = self.clock()
        self.core.on_worker(identity, key, message, now)
        if not isinstance(message, ProtocolError) and isinstance(message.body, Ready) and message.body.running:
            record = self.core.workers.get(identity)
            if record is not None:
                self.adoption.adopt(record, message.body.running, now)

    def _failover_tick(self, now: float) -> None:
        """Keep the leadership session alive; queue what surviving workers did not claim after a takeover."""
        if self.leader is not None:
            self.leader.renew(time.monotonic())  # the lease is real time, whatever clock drives the core
        self.adoption.tick(now)

    def _read_cache(self, now: float) -> None:
        """The I/O the core set aside: read the result cache for new jobs that may have a stored answer."""
        core = self.core
        for job in core.pending_lookups():
            core.on_lookup(job, core.hooks.lookup(job), now)

    def _send(self, messages: list[Outgoing]) -> None:
        if not messages:
            return
        clients, workers, backlog, links = self.clients.send, self.workers.send, self.backlog, self.links
        for message in messages:
            to_worker, identity, command, body, payload = message
            if to_worker:
                workers(identity, command, body)
            elif links is not None and not links.allows(identity):  # its key's connection closed (CURVE)
                links.withhold(message)
            elif identity in backlog:  # behind replies the client has not taken yet
                backlog.hold(identity, command, body, payload)
            elif not clients(identity, command, body, payload) and self.clients.last_errno == zmq.EAGAIN:
                backlog.hold(identity, command, body, payload)
        messages.clear()

    def _commit(self) -> None:
        """Group commit: write what changed, then send what waited for it."""
        core = self.core
        outbox = core.outbox
        self._send(outbox.now)
        if not core.hooks.committing:
            self._send(outbox.later)
            self._flush_backlog()
            return
        if core.journal_fault is not None and time.monotonic() < self._journal_retry_at:
            return
        try:
            core.hooks.commit()
        except JournalUnavailable as exc:
            # Keep running: the rows stay pending, durable messages keep waiting, new jobs are refused.
            core.on_commit(str(exc))
            self._journal_retry_at = time.monotonic() + self.settings.journal_retry_s
            return
        core.on_commit(None)
        self._send(outbox.later)
        self._flush_backlog()

    def _flush_backlog(self) -> None:
        if self.backlog:  # a client that was slow may read again: do not wait for the next tick
            self.backlog.flush(self._send_linked if self.links is not None else self.clients.send,
                               lambda: self.clients.last_errno)

    def _send_linked(self, identity: bytes, command: Any, body: Any, payload: Any) -> bool:
        """Send a backlogged reply under CURVE: a client whose connection closed gets nothing (as without CURVE,
        its backlog is dropped), whoever holds its routing id now."""
        assert self.links is not None
        if not self.links.allows(identity):
            self.clients.last_errno = zmq.EHOSTUNREACH
            return False
        return self.clients.send(identity, command, body, payload)

    def _shutdown(self) -> None:
        self.core.shut_down()
        self._send(self.core.outbox.now)
        self.close()
        log.info("broker %s stopped", self.broker_id)

    def close(self) -> None:
        if self.http is not None:
            self.http.stop()
        if self.links is not None:
            self.links.close()
        self.clients.sock.close(linger=200)
        self.workers.sock.close(linger=200)
        self.core.hooks.close()
        if self.curve is not None:
            self.curve.stop()
        if self._own_ctx:
            self.ctx.term()
        self.state_lock.release()
