"""One worker process: load the engine once, then serve leases from the broker until told to stop.

Threads: the main thread is the I/O thread. It owns the DEALER socket (connection.py), heartbeats every
interval whether idle or busy, dispatches broker commands and sends what the synthesis threads
(synthesis.py) produce. Those threads report through a queue and wake the I/O thread through a pipe; they
never touch ZeroMQ. Signals are handled on the main thread and only set flags. The engine and its threads
live in an EngineHost (engine_host.py), the jobs in hand in a LeaseBook (leases.py); every message to the
broker is a tts_protocol.messages model sent through BrokerConnection (connection.py), which frames it with
tts_protocol's encode.

Leaving: SIGTERM/SIGINT -> take no new job, answer the ones in hand, DISCONNECT, exit 0 (a second signal
exits at once). max_jobs / max_rss_mb -> the same, exit ExitCode.RECYCLE so the supervisor starts a fresh
process at once. A cancelled job whose engine does not stop within cancel_grace_s -> exit
ExitCode.ENGINE_HUNG (the supervisor replaces the process). B_DISCONNECT with reason `drained` (the broker's
DRAIN_WORKER) -> leave and exit ExitCode.DRAINED, which the supervisor does not restart.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import queue
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any, Mapping, Optional

import zmq

from tts_protocol import Command, ErrorCode, Message
from tts_protocol.messages import (
    CancelLease,
    Disconnect,
    Fail,
    Heartbeat,
    JobAssignment,
    Partial,
    Ready,
    WorkerReload,
    WorkerResult,
)

from tts_worker.connection import BrokerConnection
from tts_worker.engine_host import EngineHost
from tts_worker.engines.base import EngineLoadError, SynthesisRequest
from tts_worker.exit_codes import ExitCode
from tts_worker.leases import Lease, LeaseBook
from tts_worker.settings import WorkerSettings
from tts_worker.stats import WorkerStats
from tts_worker.survival import SurvivingLeases
from tts_worker.synthesis import Chunk, Done, Failed, Task

log = logging.getLogger(__name__)

POLL_MAX_S = 0.1
LEAVE_LINGER_MS = 1000
HUNG_LINGER_MS = 500
MAX_STR = 256  # ShortStr on the wire
MAX_MESSAGE = 4096
MAX_CAPACITY = 1024
MAX_SAMPLE_RATE = 384_000
MAX_RELOAD_ERROR = 1000
CAPACITY_MIN_INTERVAL_S = 0.05  # an adaptive engine's capacity changes go out at most this often
_UNSENT = -1


class ProbeFile:
    """A file a probe checks by age: touched at most once an interval while shown, removed when not.

    A touch or removal that fails logs one warning and is retried a minute later, not at every turn of the loop.
    """

    def __init__(self, path: Optional[str], interval_s: float, what: str) -> None:
        self.path = Path(path) if path else None
        self.interval_s = interval_s
        self.what = what
        self.shown = False  # this process made the file (run() removes a stale one first)
        self._next_touch = 0.0
        self._retry_at = 0.0

    def show(self, now: float, shown: bool) -> None:
        if self.path is None or now < self._retry_at:
            return
        if shown == self.shown and (not shown or now < self._next_touch):
            return
        self._next_touch = now + self.interval_s
        try:
            if shown:
                self.path.touch()
            else:
                self.path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("cannot update %s file %s: %s", self.what, self.path, exc)
            self._retry_at = now + 60.0
            return
        if shown != self.shown:
            log.info("%s", f"{self.what}: {self.path} is touched" if shown else f"not {self.what}: {self.path} removed")
        self.shown = shown

    def remove(self) -> None:
        """At start and exit: no file, whatever this process showed."""
        if self.path is not None:
            try:
                self.path.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("cannot remove %s file %s: %s", self.what, self.path, exc)
        self.shown = False


def _name(text: str) -> str:
    """`text` as a READY name: at most 256 characters, control characters replaced (the broker logs them)."""
    return "".join(c if c.isprintable() else "?" for c in text[:MAX_STR])


class WorkerDaemon:
    """The I/O loop of one worker process. run() returns the process exit code."""

    def __init__(self, settings: WorkerSettings, options: Mapping[str, Any], *, supervised: bool = False,
                 supervisor_status_file: Optional[Path] = None) -> None:
        self.supervisor_status_file = supervisor_status_file
        # Files probes check by age: the loop turns (liveness); a broker answers this worker (readiness).
        self.health_file = ProbeFile(settings.health_file, settings.heartbeat_interval_s, "health")
        self.ready_file = ProbeFile(settings.ready_file, settings.heartbeat_interval_s, "ready")
        self.settings = settings
        self.supervised = supervised
        self.stats = WorkerStats()
        self.leases = LeaseBook(cancel_grace_s=settings.cancel_grace_s)
        self.engine_host = EngineHost(settings, options, self._notify)
        self._stopping = False
        self._abort = False
        self._stop_logged = False
        self._leave_reason = ""
        self._exit_code = ExitCode.OK
        self._pending_reload: Optional[dict[str, Any]] = None
        self._host = socket.gethostname()
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
        self._context: Optional[zmq.Context] = None
        self.conn: Optional[BrokerConnection] = None
        self._next_heartbeat = 0.0
        self._advertised = _UNSENT  # the capacity the broker was last told (adaptive engines)
        self._warm_generation: Optional[int] = None  # the engine's warm_generation at the last heartbeat
        self._next_capacity_at = 0.0

    # ---- life cycle ------------------------------------------------------------------------------

    def run(self) -> int:
        """Load the engine (EngineLoadError propagates), then serve until stopped."""
        self._install_signals()
        self.ready_file.remove()  # a stale one (a restart) must not say ready while the model loads
        loaded = self.engine_host.load()
        self.stats.load_time_ms = loaded.load_time_ms
        info = loaded.info
        log.info("[%s] engine %s model %s loaded in %d ms (capacity %d, %s)", self.settings.name, info.engine,
                 info.model, loaded.load_time_ms, info.capacity, info.device)
        self._context = zmq.Context()
        self.conn = BrokerConnection(
            self._context, self.settings.broker_url, timeout_s=self.settings.broker_timeout_s,
            backoff_min_s=self.settings.reconnect_min_s, backoff_max_s=self.settings.reconnect_max_s,
            curve=self.settings.curve_keys(),
        )
        self.survival: Optional[SurvivingLeases] = None
        if len(self.conn.endpoints) > 1:  # failover: running jobs outlive the broker that leased them
            self.survival = SurvivingLeases(self.leases, keep_s=max(30.0, 10 * self.settings.broker_timeout_s),
                                            resend_window_s=self.settings.broker_timeout_s + 1.0)
        try:
            return int(self._loop())
        finally:
            self.ready_file.remove()
            self.conn.close()
            self._context.term()
            if threading.current_thread() is threading.main_thread():
                signal.set_wakeup_fd(-1)
            for fd in (self._wake_r, self._wake_w):
                os.close(fd)

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        signal.signal(signal.SIGTERM, self._on_signal)
        # Under a supervisor, Ctrl-C reaches the whole process group: the supervisor forwards SIGTERM instead.
        signal.signal(signal.SIGINT, signal.SIG_IGN if self.supervised else self._on_signal)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._stopping:
            self._abort = True
        self._stopping = True
        self._leave_reason = self._leave_reason or "shutdown"

    def request_stop(self) -> None:
        """Stop as SIGTERM would (for embedding and tests)."""
        self._on_signal(signal.SIGTERM, None)
        self._notify()

    def _notify(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except (BlockingIOError, OSError):
            pass  # the pipe is full or closed: the loop is awake anyway

    # ---- the loop --------------------------------------------------------------------------------

    def _loop(self) -> ExitCode:
        assert self.conn is not None
        conn = self.conn
        poller_generation = -1
        poller = zmq.Poller()
        while True:
            now = time.monotonic()
            if self._abort:
                log.warning("[%s] second signal: leaving now with %d job(s) in hand", self._tag(), len(self.leases))
                self._leave("shutdown (forced)")
                return ExitCode.ERROR
            if self._stopping and not self._stop_logged:
                self._stop_logged = True
                log.info("[%s] stop requested: answering %d job(s) in hand, then leaving", self._tag(),
                         len(self.leases))
            if self._leaving() and not conn.connected and self.survival is not None and self.survival.orphaned():
                # A leaving worker opens no new connection, so no next broker can take these back: waiting
                # keep_s (30 s) for one only held `docker compose down` until SIGKILL. The next active broker
                # requeues the jobs nobody claims.
                log.info("[%s] leaving between brokers: giving up %d job(s) in hand", self._tag(), len(self.leases))
                self.survival.give_up()
                self.leases.cancel_all(now)
            if self._leaving() and not self.leases:
                self._leave(self._leave_reason)
                return self._exit_code
            if self._pending_reload is not None and not self.leases and not self._leaving():
                self._reload(self._pending_reload)
                continue
            if not conn.connected and now >= conn.reconnect_at and not self._leaving():
                conn.open()
                self._send_ready()
                self._next_heartbeat = now + self.settings.heartbeat_interval_s
            if poller_generation != (conn.generation if conn.connected else -1):
                poller = zmq.Poller()
                poller.register(self._wake_r, zmq.POLLIN)
                if conn.socket is not None:
                    poller.register(conn.socket, zmq.POLLIN)
                if conn.monitor is not None:
                    poller.register(conn.monitor, zmq.POLLIN)
                poller_generation = conn.generation if conn.connected else -1
            ready = dict(poller.poll(int(POLL_MAX_S * 1000)))
            if self._wake_r in ready:
                self._drain_wake_pipe()
            if conn.socket is not None and conn.socket in ready:
                for message in conn.receive():
                    self._dispatch(message)
                if self.survival is not None and self.survival.held:
                    for event in self.survival.release():  # the new broker answered: report what finished
                        self._on_outcome(event)
            self._handle_events()
            now = time.monotonic()
            self._check_cancel_grace(now)
            self.health_file.show(now, True)
            self._show_ready(now)
            self._advertise_capacity(now)
            if conn.connected and now >= self._next_heartbeat:
                self._send_heartbeat()
                self._next_heartbeat = now + self.settings.heartbeat_interval_s
            if conn.monitor is not None and conn.monitor in ready and conn.disconnected():
                conn.drop("broker closed the connection")
                self._orphan_leases()
            elif conn.broker_silent(now):
                conn.drop(conn.handshake_failure or f"broker silent for {self.settings.broker_timeout_s:.1f} s")
                self._orphan_leases()
            if self.survival is not None and self.survival.expired(now):
                self.leases.cancel_all(now)

    def _leaving(self) -> bool:
        return self._stopping or self._exit_code in (ExitCode.RECYCLE, ExitCode.DRAINED)

    def _leave(self, reason: str) -> None:
        self._show_ready(time.monotonic())  # leaving: not ready
        self._disconnect(reason, linger_ms=LEAVE_LINGER_MS)
        log.info("[%s] leaving (%s) after %d job(s) done, %d failed", self._tag(), reason,
                 self.stats.jobs_done, self.stats.jobs_failed)
        if not self.engine_host.close(timeout_s=1.0):
            log.warning("[%s] a synthesis thread is still busy at exit", self._tag())

    def _drain_wake_pipe(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _tag(self) -> str:
        routing_id = self.conn.routing_id if self.conn is not None and self.conn.routing_id else "-"
        return f"{self.settings.name} {routing_id}"

    # ---- broker -> worker ------------------------------------------------------------------------

    def _dispatch(self, message: Message) -> None:
        body = message.body
        if message.command is Command.B_HEARTBEAT:
            return
        if message.command is Command.B_JOB and isinstance(body, JobAssignment):
            self._on_job(body)
        elif message.command is Command.B_CANCEL and isinstance(body, CancelLease):
            self._on_cancel(body)
        elif message.command is Command.B_DISCONNECT and isinstance(body, Disconnect) and body.reason == "drained":
            # DRAIN_WORKER: the broker gives this worker no more jobs and forgot it; leave for good.
            log.info("[%s] drained by the broker: leaving", self._tag())
            self._exit_code = ExitCode.DRAINED
            self._leave_reason = "drained"
        elif message.command is Command.B_DISCONNECT and isinstance(body, Disconnect):
            assert self.conn is not None
            self.conn.drop(f"broker sent DISCONNECT ({body.reason[:200] or 'no reason'})")
            self._orphan_leases()
        elif message.command is Command.B_RELOAD and isinstance(body, WorkerReload):
            self._on_reload(body)
        else:
            log.warning("[%s] unexpected %s from broker ignored", self._tag(), message.command.name)

    def _on_job(self, job: JobAssignment) -> None:
        assert self.conn is not None
        key = (job.job_id, job.attempt)
        if key in self.leases:
            log.warning("[%s] job %s attempt %d: duplicate JOB ignored", self._tag(), job.job_id, job.attempt)
            return
        if self._leaving():
            log.info("[%s] job %s attempt %d: refused, worker is leaving", self._tag(), job.job_id, job.attempt)
            self.conn.send(Command.W_FAIL, Fail(job_id=job.job_id, attempt=job.attempt, code=ErrorCode.SHUTTING_DOWN,
                                                message="worker is shutting down", retryable=True))
            return
        lease = self.leases.open(job.job_id, job.attempt, generation=self.conn.generation, stream=job.stream)
        log.info("[%s] job %s attempt %d: leased (%d chars, speaker %r, stream %s)", self._tag(), job.job_id,
                 job.attempt, len(job.text), (job.speaker or "")[:64], job.stream)
        request = SynthesisRequest(job_id=job.job_id, text=job.text, speaker=job.speaker, voice=dict(job.voice),
                                   stream=job.stream, timeout_s=job.timeout_ms / 1000.0)
        self.engine_host.submit(Task(lease.key, request, lease.cancel, job.stream))

    def _on_cancel(self, cancel: CancelLease) -> None:
        lease = self.leases.get((cancel.job_id, cancel.attempt))
        if lease is None:
            log.info("[%s] job %s attempt %d: CANCEL for a lease not in hand ignored", self._tag(),
                     cancel.job_id, cancel.attempt)
            return
        log.info("[%s] job %s attempt %d: cancel (%s)", self._tag(), cancel.job_id, cancel.attempt,
                 cancel.reason[:100] or "no reason")
        if self.survival is not None and self.survival.forget(lease.key):
            return  # it had finished already; its outcome was held for a broker that does not want it
        self.leases.cancel(lease, time.monotonic(), by_broker=True)

    def _orphan_leases(self) -> None:
        """The broker that leased these is gone: stop them; their outcome will not be reported.

        With an endpoint list they keep running for the next broker instead (survival.py)."""
        if self.survival is not None:
            self.survival.orphan(time.monotonic())
            if len(self.leases):
                log.info("[%s] %d job(s) in hand kept for the next broker", self._tag(), len(self.leases))
            return
        for lease in self.leases.cancel_all(time.monotonic()):
            log.info("[%s] job %s attempt %d: abandoned (broker connection lost)", self._tag(),
                     lease.job_id, lease.attempt)

    def _on_reload(self, reload: WorkerReload) -> None:
        if self._leaving():
            log.info("[%s] RELOAD ignored: worker is leaving", self._tag())
            return
        self._pending_reload = self.engine_host.merged_options(reload.options, base=self._pending_reload)
        log.info("[%s] RELOAD asked (%s); %d job(s) to finish first", self._tag(),
                 ", ".join(sorted(reload.options)) or "same options", len(self.leases))

    # ---- synthesis -> broker ---------------------------------------------------------------------

    def _handle_events(self) -> None:
        events = self.engine_host.events
        while True:
            try:
                event = events.get_nowait()
            except queue.Empty:
                return
            if isinstance(event, Chunk):
                self._on_chunk(event)
            else:
                self._on_outcome(event)

    def _reportable(self, lease: Lease) -> bool:
        assert self.conn is not None
        return self.conn.connected and lease.generation == self.conn.generation

    def _on_chunk(self, event: Chunk) -> None:
        assert self.conn is not None
        lease = self.leases.get(event.key)
        if lease is None or not lease.stream or lease.cancel.is_set() or not self._reportable(lease):
            return
        self.conn.send(Command.W_PARTIAL, Partial(job_id=lease.job_id, attempt=lease.attempt, seq=event.seq,
                                                  sample_rate=event.sample_rate, channels=event.channels),
                       event.pcm)

    def _on_outcome(self, event: Done | Failed) -> None:
        assert self.conn is not None
        if self.survival is not None:
            lease_now = self.leases.get(event.key)
            if lease_now is not None and not self._reportable(lease_now) and self.survival.hold(lease_now, event):
                log.info("[%s] job %s attempt %d: finished while between brokers; held for the next one",
                         self._tag(), *event.key)
                return
        lease = self.leases.close(event.key)
        if lease is None:
            log.warning("[%s] job %s attempt %d: outcome for a lease not in hand", self._tag(), *event.key)
            return
        if isinstance(event, Done) and not lease.cancel.is_set():
            self.stats.record_done(event.gen_ms)
        else:
            self.stats.record_failed()
        # A lowered capacity (an engine that just found its server down) must reach the broker before the
        # answer that frees the slot, or the broker hands the retry straight back to this worker.
        self._advertise_capacity(time.monotonic())
        if not self._reportable(lease):
            log.info("[%s] job %s attempt %d: finished after the broker connection was lost; not reported",
                     self._tag(), lease.job_id, lease.attempt)
        elif lease.cancelled_by_broker:
            self._fail(lease, ErrorCode.CANCELLED, "cancelled by the broker", False)
        elif isinstance(event, Done) and len(event.pcm) > self.settings.max_result_bytes:
            self._fail(lease, ErrorCode.TOO_LARGE, f"{len(event.pcm)} bytes of audio; this worker sends at most"
                       f" max_result_bytes = {self.settings.max_result_bytes}", False)
        elif isinstance(event, Done):
            self.conn.send(Command.W_RESULT, WorkerResult(
                job_id=lease.job_id, attempt=lease.attempt, sample_rate=event.sample_rate, channels=event.channels,
                gen_time_ms=max(0, event.gen_ms), deterministic=event.deterministic,
            ), event.pcm)
            log.info("[%s] job %s attempt %d: done in %d ms (%d bytes)", self._tag(), lease.job_id, lease.attempt,
                     event.gen_ms, len(event.pcm))
        else:
            self._fail(lease, event.code, event.message, event.retryable)
        if self.survival is not None and self._reportable(lease):
            self.survival.sent(lease, event)
        self._check_recycle()

    def _fail(self, lease: Lease, code: ErrorCode, message: str, retryable: bool) -> None:
        assert self.conn is not None
        self.conn.send(Command.W_FAIL, Fail(job_id=lease.job_id, attempt=lease.attempt, code=code,
                                            message=message[:MAX_MESSAGE], retryable=retryable))
        log.info("[%s] job %s attempt %d: failed (%s)", self._tag(), lease.job_id, lease.attempt, code.value)

    def _check_recycle(self) -> None:
        if self._leaving():
            return
        reason = ""
        if self.settings.max_jobs and self.stats.jobs_answered >= self.settings.max_jobs:
            reason = f"recycle: max_jobs {self.settings.max_jobs} reached"
        elif self.settings.max_rss_mb:
            rss = self.stats.rss_bytes()
            if rss > self.settings.max_rss_mb * 1024 * 1024:
                reason = f"recycle: rss {rss // (1024 * 1024)} MB over max_rss_mb {self.settings.max_rss_mb}"
        if reason:
            log.info("[%s] %s; leaving once the jobs in hand are answered", self._tag(), reason)
            self._exit_code = ExitCode.RECYCLE
            self._leave_reason = reason

    def _check_cancel_grace(self, now: float) -> None:
        lease = self.leases.overdue(now)
        if lease is None:
            return
        log.error("[%s] job %s attempt %d: engine did not stop within %.1f s of cancel; exiting so the "
                  "process is replaced", self._tag(), lease.job_id, lease.attempt, self.leases.cancel_grace_s)
        self._disconnect("engine hung", linger_ms=HUNG_LINGER_MS)
        if self._context is not None:
            self._context.term()  # returns once the DISCONNECT is out (or the linger ran out)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(ExitCode.ENGINE_HUNG)  # the synthesis thread is stuck: no orderly exit is possible

    # ---- worker -> broker ------------------------------------------------------------------------

    def _advertise_capacity(self, now: float) -> None:
        """Tell the broker an adaptive engine's new capacity (a fall at once, a rise at most every 50 ms) and
        new warm speakers (at most every 50 ms) by an early heartbeat, so dispatch sees them before the next job."""
        assert self.conn is not None
        if not self.conn.connected:
            return
        capacity = self.engine_host.capacity_now()
        warm_changed = self.engine_host.warm_generation() != self._warm_generation
        if (capacity is None or capacity == self._advertised) and not warm_changed:
            return
        falls = capacity is not None and self._advertised != _UNSENT and capacity < self._advertised
        if not falls and self._advertised != _UNSENT and now < self._next_capacity_at:
            return
        self._next_capacity_at = now + CAPACITY_MIN_INTERVAL_S
        self._send_heartbeat()
        self._next_heartbeat = now + self.settings.heartbeat_interval_s

    def _send_ready(self) -> None:
        assert self.conn is not None
        info = self.engine_host.info
        adaptive = self.engine_host.capacity_now()
        capacity = info.capacity if adaptive is None else max(1, adaptive)
        self._advertised = _UNSENT  # an adaptive engine's HEARTBEAT follows at once (it may say 0)
        self.conn.send(Command.W_READY, Ready(
            worker_id=_name(self.conn.routing_id), name=_name(self.settings.name), host=_name(self._host),
            pid=os.getpid(), engine=_name(info.engine), model=_name(info.model),
            capacity=min(max(1, capacity), MAX_CAPACITY), device=_name(info.device),
            sample_rate=min(max(0, info.sample_rate), MAX_SAMPLE_RATE), licence=info.licence[:MAX_STR],
            load_time_ms=max(0, self.stats.load_time_ms),
            reload_error=(self.stats.reload_error or "")[:1000],
            running=self.survival.announce(self.conn.generation) if self.survival is not None else [],
        ))
        log.info("[%s] READY sent (engine %s, model %s, capacity %d)", self._tag(), info.engine, info.model,
                 capacity)

    def _send_heartbeat(self) -> None:
        assert self.conn is not None
        stats = self.stats.heartbeat(busy=self.leases.busy_on(self.conn.generation),
                                     engine_stats=self.engine_host.stats())
        supervisor = self._supervisor_status()
        if supervisor:
            stats["supervisor"] = supervisor
        self._warm_generation = self.engine_host.warm_generation()
        capacity = self.engine_host.capacity_now()
        if capacity is not None and capacity != self._advertised:
            log.debug("[%s] capacity %s -> %d", self._tag(), self._advertised, capacity)
            self._advertised = capacity
        self.conn.send(Command.W_HEARTBEAT, Heartbeat(stats=stats, capacity=capacity))

    def _show_ready(self, now: float) -> None:
        """Readiness for probes: the ready file is fresh while a broker answers and this worker takes jobs.

        A key the broker refuses, a broker that is gone or silent, and a drain remove it at this turn of the loop;
        while ready, its mtime moves every heartbeat interval (so a wedged loop also stops looking ready).
        """
        assert self.conn is not None
        self.ready_file.show(now, self.conn.answering(now) and not self._leaving())

    def _supervisor_status(self) -> dict[str, Any]:
        """The autoscaling supervisor's last decision (a small JSON file it rewrites atomically), if any."""
        if self.supervisor_status_file is None:
            return {}
        try:
            data = json.loads(self.supervisor_status_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {str(k)[:64]: v for k, v in list(data.items())[:16] if isinstance(v, (int, float, str, bool))}

    def _disconnect(self, reason: str, *, linger_ms: int) -> None:
        """DISCONNECT on the current socket (if any), then close it, letting queued messages go first."""
        assert self.conn is not None
        if self.conn.connected:
            self.conn.send(Command.W_DISCONNECT, Disconnect(reason=reason[:1024]))
            self.conn.close(linger_ms=linger_ms)

    # ---- hot reload ------------------------------------------------------------------------------

    def _reload(self, options: dict[str, Any]) -> None:
        """Leave the broker, load the engine with the merged options, swap on success, then READY again."""
        assert self.conn is not None
        self._pending_reload = None
        self._disconnect("reload", linger_ms=LEAVE_LINGER_MS)
        log.info("[%s] reloading engine %s", self._tag(), self.settings.engine)
        try:
            loaded = self.engine_host.reload(options)
        except EngineLoadError as exc:
            self.stats.reload_error = str(exc)[:MAX_RELOAD_ERROR]
            log.error("[%s] reload failed, keeping the current engine: %s", self._tag(), exc)
        else:
            self.stats.load_time_ms = loaded.load_time_ms
            self.stats.reload_error = None
            log.info("[%s] engine reloaded in %d ms (model %s)", self._tag(), loaded.load_time_ms,
                     loaded.info.model)
        self.conn.reconnect_at = time.monotonic()
