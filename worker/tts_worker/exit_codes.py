"""Process exit codes shared by the worker and its supervisor."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Why a worker process ended; the supervisor acts on it."""

    OK = 0  # stopped on request (SIGTERM/SIGINT): not restarted
    ERROR = 1  # unexpected failure: restarted with backoff
    USAGE = 2  # bad command line, unknown engine (click uses 2 too): not restarted
    LOAD_FAILED = 3  # the engine could not load (bad checkpoint, missing package): not restarted
    RECYCLE = 4  # left cleanly after max_jobs / max_rss_mb: restarted at once
    ENGINE_HUNG = 5  # a cancelled job did not stop within cancel_grace_s: restarted with backoff
    DRAINED = 6  # the broker drained this worker (DRAIN_WORKER): not restarted
