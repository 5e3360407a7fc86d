"""Book-keeping for one unfinished job or request inside the client's I/O thread.

Only the I/O thread touches these objects; callers see nothing but the Future.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import Future
from typing import Any, Callable, Optional

from tts_protocol.messages import Error, Partial, Result, Submit

from tts_client.results import AudioChunk
from tts_client.retry import backoff_delay_s

ChunkSink = Callable[[AudioChunk], None]
AcceptedHook = Callable[[], None]


def settle(future: Future, *, result: Any = None, error: Optional[BaseException] = None) -> bool:
    """Complete a future once; False if it was already done (delivered, or cancelled by its caller)."""
    if future.done():
        return False
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except Exception:  # InvalidStateError: the caller cancelled it between done() and set_*()
        return False
    return True


@dataclasses.dataclass(slots=True, eq=False)
class PendingJob:
    """A submitted job: its request (for resubmission), its caller's Future and its stream position."""

    request: Submit
    future: Future
    sink: Optional[ChunkSink]
    deadline: Optional[float]
    last_heard: float
    started: float = 0.0
    heard_any: bool = False
    retry_at: Optional[float] = None
    last_error: Optional[Error] = None
    cancel_requested: bool = False
    retries: int = 0
    attempt: int = 0
    chunks_delivered: int = 0
    bytes_delivered: int = 0
    on_accepted: Optional[AcceptedHook] = None  # called once, at the first ACCEPTED (or RESULT) for the job

    @property
    def job_id(self) -> str:
        return self.request.job_id

    def schedule_retry(self, now: float, error: Error, *, initial_s: float, cap_s: float) -> None:
        """Wait (PROTOCOL.md section 9 backoff) before resubmitting after a retryable error."""
        self.last_error = error
        self.retry_at = now + backoff_delay_s(self.retries, initial_s=initial_s, cap_s=cap_s)
        self.retries += 1

    def accepted(self) -> None:
        """The broker took the job: the last error is over and the next one starts the backoff again."""
        self.last_error = None
        self.retries = 0
        self.fire_accepted()

    def fire_accepted(self) -> None:
        """Tell the caller, once, that the broker holds the job (a bridge acknowledges its queue message then)."""
        hook, self.on_accepted = self.on_accepted, None
        if hook is not None:
            hook()

    def forget_attempts(self) -> None:
        """The broker restarted: its attempt numbers start again at 1, so stop comparing with old ones."""
        self.attempt = 0

    def accept_partial(self, body: Partial, payload: bytes) -> Optional[AudioChunk]:
        """The chunk to hand to the caller, or None for a stale, repeated or out-of-order one.

        seq restarts at 0 on every attempt; chunks below the count already delivered were delivered by an
        earlier attempt. A gap (seq above the count) is skipped: the RESULT carries the whole utterance and
        its tail is delivered then.
        """
        if self.sink is None or body.attempt < self.attempt:
            return None
        self.attempt = body.attempt
        if body.seq != self.chunks_delivered:
            return None
        self.chunks_delivered += 1
        self.bytes_delivered += len(payload)
        return AudioChunk(job_id=body.job_id, attempt=body.attempt, seq=body.seq, pcm=payload,
                          sample_rate=body.sample_rate, channels=body.channels)

    def tail_chunk(self, body: Result, payload: bytes) -> Optional[AudioChunk]:
        """The part of the final audio no PARTIAL delivered (all of it if the stream saw nothing)."""
        if self.sink is None or self.bytes_delivered >= len(payload):
            return None
        tail = payload[self.bytes_delivered:]
        self.bytes_delivered = len(payload)
        chunk = AudioChunk(job_id=body.job_id, attempt=body.attempt, seq=self.chunks_delivered, pcm=tail,
                           sample_rate=body.sample_rate, channels=body.channels)
        self.chunks_delivered += 1
        return chunk


@dataclasses.dataclass(slots=True, eq=False)
class PendingRequest:
    """A request (PING, JOB_STATUS, BROKER_STATUS, RELOAD) waiting for the reply with its req_id."""

    future: Future
    deadline: float
    what: str
    started: float = 0.0
    frames: Optional[list[bytes]] = None  # sent again to the next endpoint of a list (core.py)
