"""Exceptions raised by the tts-broker client: one root, one subclass per way a call can end badly."""

from __future__ import annotations

from typing import Optional

from tts_protocol import ErrorCode, TtsError


class TtsClientError(TtsError):
    """Root of every error the client raises."""


class ClientClosed(TtsClientError):
    """The client was closed while the call was pending, or a call was made after close()."""


class ClientTimeout(TtsClientError, TimeoutError):
    """A call did not finish within its timeout (a TimeoutError, so `except TimeoutError` catches it)."""


class JobTimeout(ClientTimeout):
    """The broker knew the job but it did not finish within the call's timeout."""

    def __init__(self, message: str, *, job_id: Optional[str] = None) -> None:
        super().__init__(message)
        self.job_id = job_id


class BrokerUnavailable(ClientTimeout, ConnectionError):
    """Nothing was heard from the broker within the call's timeout."""


class UnsafePath(TtsClientError, ValueError):
    """An output path that would land outside the chosen output folder."""


class RemoteError(TtsClientError):
    """The broker answered with ERROR; carries its code, message and retryable flag."""

    def __init__(self, code: str, message: str = "", *, retryable: bool = False,
                 job_id: Optional[str] = None) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.retryable = retryable
        self.job_id = job_id


class NotFound(RemoteError):
    """The broker does not know the job a request named."""


class JobFailed(RemoteError):
    """The job ended in failure (engine error, deadline, poison job, bad request, ...)."""


class JobCancelled(JobFailed):
    """The job was cancelled, by this client or another one."""


class QueueFull(JobFailed):
    """The broker's queue (or this client's share of it: too_many_jobs) stayed full until the call's timeout."""


def job_error(code: str, message: str = "", *, retryable: bool = False,
              job_id: Optional[str] = None) -> JobFailed:
    """The most specific JobFailed subclass for an ERROR code."""
    cls: type[JobFailed] = {
        ErrorCode.CANCELLED.value: JobCancelled,
        ErrorCode.QUEUE_FULL.value: QueueFull,
        ErrorCode.TOO_MANY_JOBS.value: QueueFull,  # this client's share of the queue is full
    }.get(code, JobFailed)
    return cls(code, message, retryable=retryable, job_id=job_id)


def request_error(code: str, message: str = "", *, retryable: bool = False) -> RemoteError:
    """The exception for an ERROR that answers a request (by req_id)."""
    cls = NotFound if code == ErrorCode.NOT_FOUND.value else RemoteError
    return cls(code, message, retryable=retryable)


class InvalidRequest(TtsClientError, ValueError):
    """A call's arguments cannot make a valid request (empty text, bad job id, id already in flight)."""


class BatchFailed(TtsClientError):
    """Some jobs of a batch failed; `.paths` holds the files that were written, `.failures` what went wrong."""

    def __init__(self, message: str, *, paths: list[str], failures: list[tuple[object, BaseException]]) -> None:
        super().__init__(message)
        self.paths = paths
        self.failures = failures


class OutputNotWritable(InvalidRequest):
    """The output folder cannot be created or written; found before any synthesis is spent on it."""


class NoWorkers(TtsClientError):
    """No connected worker serves the job's model (`no_workers`); `.connected` lists the models that are."""

    code = "no_workers"

    def __init__(self, message: str, *, connected: list[str]) -> None:
        super().__init__(message)
        self.connected = connected
