"""Error codes carried in ERROR/FAIL bodies and the protocol's exception root."""

from __future__ import annotations

import enum


class ErrorCode(str, enum.Enum):
    """Machine-readable error codes (PROTOCOL.md section 3)."""

    PROTOCOL = "protocol"
    BAD_REQUEST = "bad_request"
    QUEUE_FULL = "queue_full"
    SHUTTING_DOWN = "shutting_down"
    NO_WORKERS = "no_workers"
    CANCELLED = "cancelled"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    MAX_ATTEMPTS = "max_attempts"
    ENGINE_ERROR = "engine_error"
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    INTERNAL = "internal"
    OUT_OF_RANGE = "out_of_range"
    TOO_LARGE = "too_large"
    CONFLICT = "conflict"
    TOO_MANY_JOBS = "too_many_jobs"
    JOURNAL_UNAVAILABLE = "journal_unavailable"

    @property
    def retryable(self) -> bool:
        """Whether the broker marks this code retryable; RETRYABLE_CODES is the one list."""
        return self in RETRYABLE_CODES

    @classmethod
    def parse(cls, code: object, default: ErrorCode | None = None) -> ErrorCode:
        """`code` (a peer's string, or already an ErrorCode) as an ErrorCode; an unknown one is `default`
        (engine_error unless given): a worker or engine plugin may send codes outside the protocol's list."""
        if isinstance(code, ErrorCode):
            return code
        try:
            return cls(code)
        except ValueError:
            return ErrorCode.ENGINE_ERROR if default is None else default


RETRYABLE_CODES: frozenset[ErrorCode] = frozenset(
    {ErrorCode.QUEUE_FULL, ErrorCode.SHUTTING_DOWN, ErrorCode.NO_WORKERS, ErrorCode.INTERNAL,
     ErrorCode.TOO_MANY_JOBS, ErrorCode.JOURNAL_UNAVAILABLE}
)
"""The codes the broker sends with retryable=true: PROTOCOL.md's table, protocol/retry_policy.json and the Node
client's RETRY_POLICY.retryableCodes are checked against this set (tests/protocol/test_protocol_facts.py)."""


class TtsError(Exception):
    """Root of every exception raised by the tts-broker packages."""


class ProtocolError(TtsError):
    """A message that does not follow TTSP/2.

    Carries what could still be read of the message (its command and job/request id) so the receiver can
    answer the sender with a useful ERROR instead of dropping it silently, and the code to answer with:
    `out_of_range` for a number past its limit, `too_large` for a string, list or body past its size,
    `protocol` for anything else.
    """

    def __init__(
        self,
        message: str,
        *,
        command: int | None = None,
        job_id: str | None = None,
        req_id: str | None = None,
        code: ErrorCode = ErrorCode.PROTOCOL,
    ) -> None:
        super().__init__(message)
        self.command = command
        self.job_id = job_id
        self.req_id = req_id
        self.code = code
