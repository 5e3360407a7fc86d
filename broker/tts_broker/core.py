"""The broker core, sans-IO in the manner of h11: decoded messages and the time in, an outbox and events out.

One way in: `on_client(peer, principal, message, now, wall)`, `on_worker(peer, key, message, now)` and
`tick(now)`, plus the results of the I/O the server performed for the core (`on_lookup`, `on_commit`) and the
operator's `start_drain`. One way out: the `outbox` (messages the server sends; durable ones after the
journal's commit) and hook events through `hooks.emit`, whose list is fixed here, at construction.

Inside, each object owns the data it scans: the JobTable its deadlines, the LeaseBook its attempts' time
limits, the WorkerRegistry liveness and free slots by key, the JobQueue its buckets. Transitions are in
lifecycle.py, dispatch in dispatcher.py, the command tables in handlers.py; the server (server.py) keeps
sockets, the loop and the commit. No clock, socket or disk is touched here; tests drive it with a fake clock.
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence, Union

from tts_protocol import ErrorCode, ProtocolError
from tts_protocol.codec import Message, pack_body
from tts_protocol.constants import Command
from tts_protocol.messages import Disconnect, Empty

from tts_broker.auth import Principal
from tts_broker.dispatcher import Dispatcher
from tts_broker.handlers import Call, ClientCommands, KeyBinding, WorkerCommands
from tts_broker.hooks import CachedAudio, Hook, Hooks
from tts_broker.jobs import Job, JobTable
from tts_broker.leases import LeaseBook
from tts_broker.lifecycle import Lifecycle
from tts_broker.outbox import Outbox
from tts_broker.queue import JobQueue
from tts_broker.reloads import ReloadTracker
from tts_broker.settings import BrokerSettings
from tts_broker.status import BrokerInfo
from tts_broker.workers import WorkerRegistry

log = logging.getLogger(__name__)

TICK_S = 0.05  # how often the timers run (dead workers, deadlines, attempt limits, unroutable jobs)
_HEARTBEAT_BODY = pack_body(Empty())


class BrokerCore:
    """Jobs, the queue, workers and leases of one broker, and the one way in and out of them."""

    def __init__(self, settings: BrokerSettings, hooks: Sequence[Hook] = (), *,
                 info: Optional[BrokerInfo] = None) -> None:
        self.settings = settings
        self.info = info or BrokerInfo(broker_id="b-core", version="0", started_at=0.0)
        self.jobs = JobTable(ttl_s=settings.result_ttl_s, max_jobs=settings.max_retained_jobs,
                             max_bytes=settings.max_retained_bytes, dead_letter_ttl_s=settings.dead_letter_ttl_s)
        self.queue = JobQueue()
        self.workers = WorkerRegistry()
        self.leases = LeaseBook(self.jobs, job_timeout_s=settings.job_timeout_s,
                                max_client_running=settings.max_client_running)
        self.outbox = Outbox(durable=any(h.durable for h in hooks))
        self.reloads = ReloadTracker(self.outbox)
        self.hooks = Hooks([*hooks, self.reloads])
        self.life = Lifecycle(settings, jobs=self.jobs, queue=self.queue, workers=self.workers, leases=self.leases,
                              outbox=self.outbox, hooks=self.hooks)
        self.dispatcher = Dispatcher(self.life)
        self.client_commands = ClientCommands(self.life, self.dispatcher, self, self.info, self.reloads)
        self.worker_commands = WorkerCommands(self.life)
        self._client_keys = KeyBinding("client")
        self._worker_keys = KeyBinding("worker")
        self.journal_fault: Optional[str] = None  # why journal commits fail; new jobs are refused meanwhile
        self.drain_until = 0.0
        self.unroutable_since: dict[Optional[str], float] = {}
        self._next_timers = 0.0
        self._next_heartbeat = 0.0

    # ---- state the views read ----------------------------------------------------------------------

    @property
    def draining(self) -> bool:
        return self.life.draining

    @property
    def paused(self) -> set[str]:
        return self.life.paused

    @property
    def dirty(self) -> bool:
        return self.life.dirty

    # ---- start-up ----------------------------------------------------------------------------------

    def restore(self) -> None:
        """Take back what a hook (the journal) kept: unfinished jobs queue again, finished ones are retained."""
        for hook in self.hooks:
            restored = hook.restore()
            if restored is None:
                continue
            for job in restored.finished:
                self.jobs.retain(job)
            for job in restored.unfinished:
                job.tries = len(job.workers_tried)  # attempts since the last reopen (reset empties the list)
                self.jobs.add(job)
                self.queue.push(job)
            self.life.dirty = self.life.dirty or bool(restored.unfinished)
            log.info("restored %d unfinished jobs (requeued) and %d finished jobs", len(restored.unfinished),
                     len(restored.finished))

    # ---- the way in --------------------------------------------------------------------------------

    def on_client(self, peer: bytes, principal: Optional[Principal], message: Union[Message, ProtocolError],
                  now: float, wall: float) -> bool:
        """A decoded client message (or why it could not be decoded) from routing id `peer`.

        False if it was dropped because `peer` is bound to another key (CURVE): its connection gets nothing.
        """
        if self.settings.curve and not self._client_keys.check(peer, _user(principal)):
            return False
        if isinstance(message, ProtocolError):
            log.warning("client %r: malformed message: %s", peer, message)
            self.outbox.error(peer, message.code, str(message), job_id=message.job_id, req_id=message.req_id)
            return True
        self.client_commands.handle(Call(peer, principal, now, wall), message)
        return True

    def on_worker(self, peer: bytes, key: Optional[str], message: Union[Message, ProtocolError], now: float) -> None:
        """A decoded worker message (or why not) from routing id `peer`; `key` is its ZAP User-Id under CURVE."""
        if self.settings.curve and not self._worker_keys.check(peer, key):
            worker = self.workers.get(peer)  # a connection reusing another key's routing id: it gets nothing
            if worker is not None and worker.key != key:
                self.life.worker_gone(worker, "lost its routing id to another key's connection", now)
            return
        worker = self.workers.get(peer)
        if worker is not None:
            self.workers.touch(worker, now)  # any message proves the worker alive, even a malformed one
        if isinstance(message, ProtocolError):
            log.warning("worker %s: malformed message dropped: %s", worker.worker_id if worker else repr(peer),
                        message)
            return
        self.worker_commands.handle(peer, worker, message, now, key)

    def tick(self, now: float) -> None:
        """Called every turn of the server's loop: heartbeats and timers when due, dispatch when it may help."""
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self.settings.heartbeat_interval_s
            for worker in self.workers:
                self.outbox.worker(worker.identity, Command.B_HEARTBEAT, _HEARTBEAT_BODY)
        if now >= self._next_timers:
            self._next_timers = now + TICK_S
            self.expire(now)
            self.hooks.emit("tick", now)
        if self.life.dirty and self.journal_fault is None:  # leases wait until they can be journaled
            self.dispatch(now)

    def on_lookup(self, job: Job, hit: Optional[CachedAudio], now: float) -> None:
        """The server read the hooks' stored answer (or none) for a job the core set aside."""
        self.life.on_lookup(job, hit, now)

    def pending_lookups(self) -> list[Job]:
        """New jobs waiting for the server to ask the hooks (the result cache) for a stored answer."""
        return list(self.life.lookups.values())

    def on_commit(self, fault: Optional[str]) -> None:
        """The server's journal commit succeeded (None) or failed (why): refuse new jobs until it writes again."""
        if fault is None and self.journal_fault is not None:
            self.life.dirty = True
        self.journal_fault = fault

    def start_drain(self, now: float) -> None:
        log.info("draining: no new jobs; %d queued and %d live jobs get up to %.1fs to finish", len(self.queue),
                 self.jobs.live_count, self.settings.drain_grace_s)
        self.life.draining = True
        self.drain_until = now + self.settings.drain_grace_s

    def drain_finished(self, now: float) -> bool:
        """True once the drain is over: every job finished, nothing left could run, or the grace period is over.

        Nothing can run when no job is running and no connected worker that takes new leases serves the key of
        a queued job (`docker compose down` stops the workers first): waiting out the grace would change
        nothing. Then a journal keeps the queued jobs for the next start (their clients resubmit to it and
        attach); without one they get shutting_down now. When the grace is over, what is left gets
        shutting_down whatever the journal.
        """
        if self.jobs.live_count == 0:
            log.info("drained: every job finished")
            return True
        if now < self.drain_until:
            if not self._drain_stuck():
                return False
            if self.hooks.durable:
                log.info("drained: nothing runs and no worker serves the %d queued jobs; the journal keeps them"
                         " for the next start", self.jobs.live_count)
                return True
            log.warning("drained: nothing runs and no worker serves the %d queued jobs; without a journal they"
                        " get shutting_down", self.jobs.live_count)
        else:
            log.warning("drain grace over: %d jobs left get shutting_down", self.jobs.live_count)
        for job in self.jobs.live():
            self.life.fail(job, now, ErrorCode.SHUTTING_DOWN, "broker shut down before the job finished; resubmit")
        return True

    def _drain_stuck(self) -> bool:
        """No job running or being looked up, and no worker taking leases serves a queued key (paused ones
        count as not served). O(queued keys), not O(jobs): asked every turn of a drain."""
        if self.leases.running() or self.life.lookups:
            return False
        paused = self.life.paused
        return not any(key not in paused and self.workers.takes_key(key) for key in self.queue.keys())

    def shut_down(self) -> None:
        """The broker stops: every connected worker is told to leave (the server sends it before closing)."""
        for worker in self.workers:
            self.outbox.worker(worker.identity, Command.B_DISCONNECT, Disconnect(reason="broker shutting down"))

    # ---- steps -------------------------------------------------------------------------------------

    def dispatch(self, now: float) -> None:
        """Lease queued jobs to free worker slots (dispatcher.py)."""
        self.dispatcher.dispatch(now)

    def expire(self, now: float) -> None:
        """The timers: silent workers, job deadlines, attempt limits, unroutable jobs, retention."""
        life, settings = self.life, self.settings
        for worker in self.workers.silent(now, settings.heartbeat_interval_s * settings.heartbeat_liveness):
            log.warning("worker %s silent for %.1fs: declared dead (%d leases)", worker.worker_id,
                        now - worker.last_seen, len(worker.leases))
            life.worker_gone(worker, "died", now)
        for job in self.jobs.past_deadline(now):
            life.fail(job, now, ErrorCode.DEADLINE_EXCEEDED,
                      f"deadline of {job.request.deadline_ms} ms passed (attempt {job.attempt})",
                      cancel_reason="deadline")
        for job in self.leases.expired(now):
            life.revoke(job, "attempt timed out")
            life.requeue(job, f"attempt {job.attempt} ran past its time limit on worker {job.worker_id}", now)
        if settings.unroutable_timeout_s > 0:
            self._fail_unroutable(now)
        self.jobs.expire(now)

    def _fail_unroutable(self, now: float) -> None:
        """Fail queued jobs whose routing key no connected worker has served for unroutable_timeout_s."""
        since_by_key = self.unroutable_since
        for key in self.queue.keys():
            if key in self.life.paused or self.workers.serves_key(key):
                since_by_key.pop(key, None)
                continue
            since = since_by_key.setdefault(key, now)
            if now - since >= self.settings.unroutable_timeout_s:
                for job in list(self.queue.jobs_for_key(key)):
                    self.life.fail(job, now, ErrorCode.NO_WORKERS, f"no connected worker serves model {key!r}")
                since_by_key.pop(key, None)


def _user(principal: Optional[Principal]) -> Optional[str]:
    return f"{principal.role}:{principal.name}" if principal is not None else None
