"""A log line at most once per interval for faults that repeat per event (disk, accept, cache writes).

A fault that hits every result or every connection attempt would otherwise write one line (or one
traceback) per event: megabytes a minute. `LogThrottle.warning` logs the first occurrence, then at most
one line per `interval_s` that says how many were suppressed in between.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable


class LogThrottle:
    """Rate limit for one kind of repeating log line."""

    def __init__(self, logger: logging.Logger, *, interval_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._clock = clock
        self._next = 0.0
        self.suppressed = 0
        self.total = 0

    def log(self, level: int, msg: str, *args: Any) -> bool:
        """Log `msg % args` unless one was logged less than interval_s ago; True if it was logged."""
        self.total += 1
        now = self._clock()
        if now < self._next:
            self.suppressed += 1
            return False
        self._next = now + self.interval_s
        if self.suppressed:
            msg += " (%d more like this in the last %.0f s)"
            args = (*args, self.suppressed, self.interval_s)
            self.suppressed = 0
        self.logger.log(level, msg, *args)
        return True

    def warning(self, msg: str, *args: Any) -> bool:
        return self.log(logging.WARNING, msg, *args)

    def error(self, msg: str, *args: Any) -> bool:
        return self.log(logging.ERROR, msg, *args)
