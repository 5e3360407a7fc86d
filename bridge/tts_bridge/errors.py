"""The bridges' exceptions: one root, and the two ways a message can fail."""

from __future__ import annotations

from tts_protocol import TtsError


class BridgeError(TtsError):
    """Root of every error a bridge raises."""


class MalformedJob(BridgeError):
    """A message that can never become a job (not JSON, no text, text too long, unknown model): dead-lettered."""


class JobRejected(BridgeError):
    """The broker ended the job with a non-retryable error (bad request, conflict, engine error): dead-lettered."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code


class JobDeferred(BridgeError):
    """The job could not be finished now for a reason that passes (broker away, retryable error): try again."""


class BridgeStopped(BridgeError):
    """The bridge was told to stop while it waited for its queue server."""
