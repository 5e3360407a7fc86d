"""A broker's post on a PostgreSQL journal: connect, check the schema, stand by until it leads, then journal.

What server.py calls, so that its own changes stay a few lines: `LeaderPost.take(settings)` before anything
is bound (a standby waits inside it), `check(now)` after every poll (a broker that woke from a freeze steps
down before it answers anything), `renew(now)` from the timer, and `close()`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Optional

from tts_broker.journal_pg import PgJournal, PgJournalHook
from tts_broker.leadership import LeaderLink, check_url
from tts_broker.standby_http import StandbyHttp
from tts_broker.statedir import EXIT_USAGE, BrokerStartError

if TYPE_CHECKING:
    from tts_broker.settings import BrokerSettings

log = logging.getLogger(__name__)


class BadJournalUrl(BrokerStartError):
    exit_code = EXIT_USAGE


class LeaderPost:
    """The leadership session, the journal on it, and the lifecycle hook that writes the journal."""

    def __init__(self, link: LeaderLink, hook: PgJournalHook) -> None:
        self.link = link
        self.hook = hook
        self._watching = False

    @classmethod
    def take(cls, settings: BrokerSettings) -> LeaderPost:
        """Connect and wait until this broker is the active one (BrokerStartError subclasses on bad setup)."""
        url = settings.journal_url or ""
        try:
            check_url(url)
        except ValueError as exc:
            raise BadJournalUrl(str(exc)) from exc
        link = LeaderLink(url, lease_s=settings.leader_lease_s)
        standby_http: Optional[StandbyHttp] = None

        def on_standby() -> None:
            nonlocal standby_http
            if settings.http is not None:
                standby_http = StandbyHttp(settings.http, lambda: {**link.status(), "role": "standby",
                                                                   "journal": link.shown_url},
                                           max_connections=settings.http_max_connections,
                                           idle_timeout_s=settings.http_idle_timeout_s)
                standby_http.start()

        try:
            link.connect()
            journal = PgJournal(link)
            link.wait_for_leadership(on_standby=on_standby)
        except BaseException:
            link.close()
            raise
        finally:
            if standby_http is not None:
                standby_http.stop()
        hook = PgJournalHook(journal, result_ttl_s=settings.result_ttl_s,
                             max_audio_bytes=settings.journal_max_audio_mb * 1024 * 1024,
                             dead_letter_ttl_s=settings.dead_letter_ttl_s)
        return cls(link, hook)

    def check(self, now: float) -> None:
        if not self._watching:  # from the first turn of the loop: the restore before it may take long
            self._watching = True
            self.link.renew(now, force=True)
            self.link.start_watchdog()
        self.link.check(now)

    def renew(self, now: float) -> None:
        self.link.renew(now)

    def close(self) -> None:
        self.link.close()
