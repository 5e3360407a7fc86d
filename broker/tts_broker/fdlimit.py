"""File descriptors: raise the soft limit to the hard one at start, and report both (and how many are open).

Every client, worker and HTTP connection holds a descriptor. With the common default soft limit of 1,024,
1,100 idle HTTP connections left no descriptor for ZeroMQ's own accept: clients and workers could no longer
connect. The broker now starts with the soft limit at the hard limit (systemd units set LimitNOFILE), caps
its HTTP connections at a quarter of it (httpd.py), and the status view reports the figures.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Optional

from tts_broker.hooks import Hook

log = logging.getLogger(__name__)

try:
    import resource
except ImportError:  # not on Windows
    resource = None  # type: ignore[assignment]


def raise_nofile() -> tuple[Optional[int], Optional[int]]:
    """Set RLIMIT_NOFILE's soft limit to its hard limit; (soft, hard) afterwards, (None, None) if unknown."""
    if resource is None:
        return None, None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the descriptor limit from %d to %d: %s", soft, hard, exc)
    elif hard == resource.RLIM_INFINITY and soft != resource.RLIM_INFINITY and soft < 1 << 20:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (1 << 20, hard))
            soft = 1 << 20
        except (ValueError, OSError):
            pass
    return soft, hard


def nofile_soft() -> int:
    """The current soft descriptor limit (a large number where unknown)."""
    if resource is None:
        return 1 << 16
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def open_descriptors() -> Optional[int]:
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # the listing's own descriptor
    except OSError:
        return None


def _limit(value: int) -> Optional[int]:
    return None if resource is None or value == resource.RLIM_INFINITY else value


class DescriptorHook(Hook):
    """Reports the descriptor limits in the status view's `jobs.nofile` (soft, hard, open)."""

    def status(self) -> dict[str, Any]:
        if resource is None:
            return {}
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        return {"nofile": {"soft": _limit(soft), "hard": _limit(hard), "open": open_descriptors()}}
