"""Leadership on the journal's PostgreSQL database: one active broker, any number of standbys, fenced by epoch.

The active broker is the one whose journal session holds a session advisory lock. The lock lives and dies
with that one connection, and every journal write goes through it, so:

- kill -9 of the active: the server ends its session and frees the lock at once; a standby (polling every
  `poll_s`) takes it within a poll.
- a frozen active (SIGSTOP, a stalled VM): the session carries `idle_session_timeout` = the lease, so the
  server ends it once it has been silent that long. The active renews (a statement) every lease/3 while idle.
- a partitioned active: libpq's `tcp_user_timeout` (2/3 of the lease) breaks its statements, and a local trust
  window (3/4 of the lease since the last statement that succeeded was sent) makes it stop acting before the
  server's idle timeout frees the lock for a standby. The loop checks the window after every poll; a watchdog
  thread enforces it too, with os._exit, for when the loop itself is stuck in a statement that never returns
  (a network path that swallows packets but keeps the TCP connection open).
- every takeover bumps `epoch` in the journal's meta table in the same database, and every commit checks,
  inside its transaction, that the epoch is still its own: a broker that lost its session or its lock can
  never write again (it is fenced) and steps down.

A lost session within the trust window (PostgreSQL restarted) is not the end: the broker reconnects, takes
the lock again and checks the epoch; if nobody took over, it carries on as active with the same epoch.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any, Callable, Optional
from urllib.parse import urlsplit, urlunsplit

from tts_broker.statedir import BrokerStartError, JournalCorrupt

log = logging.getLogger(__name__)

#: The advisory lock's key: "tts-brkr" as a 64-bit integer. Brokers sharing a database share leadership.
LOCK_KEY = 0x7474732D62726B72
SCHEMA_VERSION = 1

#: `tts-broker` exit codes for the PostgreSQL journal (README, docs/failover.md).
EXIT_JOURNAL_CONNECT = 6
EXIT_DEPOSED = 7


class JournalConnectError(BrokerStartError):
    """The journal database cannot be reached or refuses us (host down, wrong password, no such database)."""

    exit_code = EXIT_JOURNAL_CONNECT


class LeadershipLost(BaseException):
    """This broker is no longer the active one (its session, its lock or its epoch is gone): it must stop.

    A BaseException on purpose, like SystemExit: the loop's guards keep the broker running through any
    Exception from a handler or a timer, and this one must get past them all to the entry point.
    """

    exit_code = EXIT_DEPOSED


def redact(url: str) -> str:
    """The URL without its password, for logs and status."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable journal URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def check_url(url: str) -> None:
    """ValueError unless `url` is a postgresql:// URL (checked before anything is started)."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError(f"journal URL must start with postgresql:// (got {parts.scheme or 'no scheme'}://)")
    if not parts.hostname and "host=" not in (parts.query or ""):
        raise ValueError("journal URL names no host")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ValueError(f"journal URL has a bad port: {exc}") from exc


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:
        raise BrokerStartError("the PostgreSQL journal needs the `postgres` extra: "
                               "pip install 'tts-broker[postgres]'") from exc
    return psycopg


class LeaderLink:
    """The broker's one PostgreSQL session: journal writes, the advisory lock, the epoch and the lease."""

    def __init__(self, url: str, *, lease_s: float = 3.0, connect_timeout_s: float = 5.0,
                 poll_s: float = 0.1) -> None:
        self.url = url
        self.shown_url = redact(url)
        self.lease_s = lease_s
        self.trust_s = lease_s * 3 / 4  # a margin of a quarter lease before the server frees the lock
        self.renew_s = lease_s / 3
        self.connect_timeout_s = connect_timeout_s
        self.poll_s = poll_s
        self.psycopg = _psycopg()
        self.conn: Any = None
        self.epoch = 0
        self.active = False
        self.since_wall: Optional[float] = None  # time.time() when this broker became active
        self.last_ok = 0.0  # monotonic time of the last statement that succeeded
        self.reconnects = 0

    # ---- the session ---------------------------------------------------------------------------------

    def connect(self) -> None:
        """Open the session (keepalives, tcp_user_timeout and idle_session_timeout from the lease)."""
        lease_ms = int(self.lease_s * 1000)
        # An active broker reconnecting (regain) must not block past its trust window (libpq's minimum is 2 s).
        timeout_s = self.connect_timeout_s if not self.active else min(self.connect_timeout_s, self.trust_s)
        try:
            self.conn = self.psycopg.connect(
                self.url, autocommit=True, connect_timeout=max(2, int(timeout_s)),
                application_name="tts-broker", keepalives=1, keepalives_idle=1, keepalives_interval=1,
                keepalives_count=2, tcp_user_timeout=max(500, lease_ms * 2 // 3),
                options=f"-c idle_session_timeout={lease_ms} -c idle_in_transaction_session_timeout={lease_ms}",
            )
        except self.psycopg.Error as exc:
            raise JournalConnectError(f"cannot connect to the journal {self.shown_url}: {_one_line(exc)}") from exc
        self.last_ok = time.monotonic()

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception as exc:  # a dead socket: nothing to release
                log.debug("journal session close: %s", exc)
            self.conn = None

    def ok(self, sent_at: Optional[float] = None) -> None:
        """A statement on the session succeeded: the lease holds for a trust window from when it was sent."""
        self.last_ok = time.monotonic() if sent_at is None else sent_at

    def start_watchdog(self) -> None:
        """Enforce the trust window from a thread, even while the loop is stuck in a statement."""
        thread = threading.Thread(target=self._watch, name="tts-leader-watchdog", daemon=True)
        thread.start()

    def _watch(self) -> None:
        while True:
            time.sleep(min(0.05, self.trust_s / 20))
            silent_s = time.monotonic() - self.last_ok
            if self.active and silent_s > self.trust_s + 0.05:  # the loop's own check normally comes first
                message = (f"tts-broker: stepped down (epoch {self.epoch}): no word from the journal database "
                           f"for {silent_s:.1f} s and the broker loop is stuck; exiting at once")
                log.critical(message)
                for handler in logging.getLogger().handlers:
                    handler.flush()
                print(message, file=sys.stderr, flush=True)
                os._exit(EXIT_DEPOSED)

    def broken(self) -> bool:
        return self.conn is None or self.conn.closed or self.conn.broken

    # ---- becoming active ------------------------------------------------------------------------------

    def ensure_schema(self, create: Callable[[Any], None]) -> None:
        """Create our tables if the database is new; JournalCorrupt if it holds another version of them."""
        try:
            with self.conn.transaction():
                self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY + 1,))  # two first starts
                create(self.conn)
                row = self.conn.execute("SELECT value FROM tts_meta WHERE key='schema_version'").fetchone()
                if row is None:
                    self.conn.execute("INSERT INTO tts_meta (key, value) VALUES ('schema_version', %s),"
                                      " ('epoch', '0')", (str(SCHEMA_VERSION),))
                elif row[0] != str(SCHEMA_VERSION):
                    raise JournalCorrupt(f"the journal database {self.shown_url} holds tts-broker schema version "
                                         f"{row[0]}; this broker reads version {SCHEMA_VERSION}")
        except self.psycopg.errors.InsufficientPrivilege as exc:
            raise JournalConnectError(f"journal {self.shown_url}: {_one_line(exc)}") from exc
        except self.psycopg.errors.DatatypeMismatch as exc:
            raise JournalCorrupt(f"the journal database {self.shown_url} has tables of another program: "
                                 f"{_one_line(exc)}") from exc
        except self.psycopg.Error as exc:
            if isinstance(exc, self.psycopg.errors.UndefinedColumn):
                raise JournalCorrupt(f"the journal database {self.shown_url} has a tts_meta table of another "
                                     f"schema: {_one_line(exc)}") from exc
            raise JournalConnectError(f"journal {self.shown_url}: {_one_line(exc)}") from exc
        self.ok()

    def try_lead(self) -> bool:
        """Take the lock if it is free; on success bump the epoch (one transaction) and become active."""
        got = self.conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()[0]
        self.ok()
        if not got:
            return False
        with self.conn.transaction():
            row = self.conn.execute("UPDATE tts_meta SET value = (value::bigint + 1)::text WHERE key='epoch'"
                                    " RETURNING value").fetchone()
        self.epoch = int(row[0])
        self.active = True
        self.since_wall = time.time()
        self.ok()
        return True

    def wait_for_leadership(self, *, should_stop: Callable[[], bool] = lambda: False,
                            on_standby: Optional[Callable[[], None]] = None) -> bool:
        """Poll for the lock until this broker leads (True) or should_stop() (False). Reconnects as needed."""
        said = False
        while not should_stop():
            try:
                if self.broken():
                    self.close()
                    self.connect()
                if self.try_lead():
                    log.info("journal %s: this broker is active now (epoch %d)", self.shown_url, self.epoch)
                    return True
            except (self.psycopg.Error, JournalConnectError) as exc:
                log.warning("standby: journal %s unreachable, retrying: %s", self.shown_url, _one_line(exc))
                self.close()
                time.sleep(max(self.poll_s, 0.5))
                continue
            if not said:
                said = True
                log.info("standby: another broker is active on %s; waiting to take over", self.shown_url)
                if on_standby is not None:
                    on_standby()
            time.sleep(self.poll_s)
        return False

    # ---- staying active ---------------------------------------------------------------------------------

    def check(self, now: float) -> None:
        """From the broker loop: LeadershipLost once the trust window has passed without a good statement."""
        if self.active and now - self.last_ok > self.trust_s:
            self.active = False
            log.error("stepping down (epoch %d): no word from the journal database for %.1f s", self.epoch,
                      now - self.last_ok)
            raise LeadershipLost(f"no word from the journal database for {now - self.last_ok:.1f} s (trust window "
                                 f"{self.trust_s:.1f} s): stepping down so a standby can take over")

    def renew(self, now: float, *, force: bool = False) -> None:
        """Keep the session (and so the lock) alive while idle: a statement every lease/3."""
        if not self.active or (now - self.last_ok < self.renew_s and not force):
            return
        try:
            if self.broken():
                self.regain()
                return
            sent_at = time.monotonic()
            self.conn.execute("SELECT 1")
            self.ok(sent_at)
        except self.psycopg.Error as exc:
            log.warning("journal session renewal failed (epoch %d): %s", self.epoch, _one_line(exc))

    def regain(self) -> None:
        """After a lost session (PostgreSQL restarted): reconnect, relock, and check nobody took over.

        LeadershipLost if another broker holds the lock or moved the epoch; psycopg errors while the database
        is still away (the caller retries within the trust window).
        """
        self.close()
        try:
            self.connect()
        except JournalConnectError as exc:
            raise self.psycopg.OperationalError(str(exc)) from exc
        self.reconnects += 1
        got = self.conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()[0]
        if not got:
            self.active = False
            raise LeadershipLost("another broker took over while the journal session was lost")
        row = self.conn.execute("SELECT value FROM tts_meta WHERE key='epoch'").fetchone()
        if row is None or int(row[0]) != self.epoch:
            self.active = False
            raise LeadershipLost(f"epoch moved from {self.epoch} to {row[0] if row else '?'} while the journal "
                                 "session was lost: another broker was active")
        self.ok()
        log.warning("journal session regained (epoch %d still ours)", self.epoch)

    def fence(self) -> None:
        """Inside a journal transaction: LeadershipLost unless the epoch is still ours (locks the row)."""
        row = self.conn.execute("SELECT value FROM tts_meta WHERE key='epoch' FOR UPDATE").fetchone()
        if row is None or int(row[0]) != self.epoch:
            self.active = False
            raise LeadershipLost(f"fenced: the journal's epoch is {row[0] if row else '?'}, ours {self.epoch}")

    def status(self) -> dict[str, Any]:
        return {"role": "active" if self.active else "standby", "epoch": self.epoch, "since": self.since_wall}


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:400] or type(exc).__name__
