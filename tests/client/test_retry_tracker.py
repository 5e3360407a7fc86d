"""The retry conformance cases (protocol/vectors/client_cases.json) against the client's JobTracker alone, on a
fake clock: no socket, no thread, no waiting, and bounds checked to the clock's step instead of a scheduler's
tolerance.

test_retry_policy.py runs the same cases through a real TtsClient and ROUTER socket. Cases that script the
broker's PINGs (answer_pings, pings, set_broker_id) test ClientCore's liveness, not the tracker: they run
there only.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any, Optional

import pytest

from tts_protocol import Command, Message, Side, decode
from tts_protocol.constants import JobState
from tts_protocol.messages import Accepted, Error, Partial, Result, Submit

from tts_client import ClientSettings, ClientTimeout, JobTimeout, RemoteError
from tts_client.jobs import JobTracker
from tts_client.results import AudioChunk

from test_retry_policy import CASES, chunk_pcm

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

STEP_S = 0.001  # the fake clock's tick
SLACK_S = 2 * STEP_S  # what a bound may be missed by on this clock
PING_OPS = {"answer_pings", "pings", "set_broker_id"}


class FakeClockRun:
    """One case: a JobTracker whose SUBMITs, RETRYs and CANCELs are collected with the fake time they left."""

    def __init__(self, case: dict[str, Any]) -> None:
        conf = {**CASES["defaults"]["client"], **case.get("client", {})}
        self.settings = ClientSettings(broker_url="tcp://127.0.0.1:1", ping_interval_s=conf["ping_interval_s"],
                                       resubmit_after_s=conf["resubmit_after_s"],
                                       retry_backoff_initial_s=conf["backoff_initial_s"],
                                       retry_backoff_max_s=conf["backoff_cap_s"])
        self.now = 0.0
        self.sent: list[tuple[float, Message]] = []
        self.tracker = JobTracker(self.settings, self._send, lambda what, now: JobTimeout(what))
        self.jobs: dict[str, tuple[Future, float, list[bytes], Optional[float]]] = {}
        self.settled: dict[str, float] = {}
        self.retried: set[str] = set()
        self.mark = 0.0

    def _send(self, frames: list[bytes]) -> None:
        msg = decode(frames, side=Side.CLIENT, to_broker=True)
        if msg.command is Command.RETRY:
            self.retried.add(msg.body.job_id)
        else:
            self.sent.append((self.now, msg))

    def advance(self, until: float) -> None:
        while self.now < until - 1e-9:
            self.now = round(self.now + STEP_S, 6)
            self.tracker.tick(self.now)
            for job_id, (future, *_rest) in self.jobs.items():
                if future.done() and job_id not in self.settled:
                    self.settled[job_id] = self.now

    def advance_until_sent(self, limit_s: float = 60.0) -> tuple[float, Message]:
        end = self.now + limit_s
        while not self.sent:
            assert self.now < end, f"nothing sent within {limit_s}s of fake time"
            self.advance(self.now + STEP_S)
        return self.sent.pop(0)

    def check_bounds(self, what: str, took_s: float, bounds: Optional[list[float]]) -> None:
        if bounds is not None:
            low, high = bounds
            assert low - SLACK_S <= took_s <= high + SLACK_S, f"{what} took {took_s:.4f}s, expected {bounds}"

    def run(self, steps: list[dict[str, Any]]) -> None:
        for i, step in enumerate(steps):
            try:
                getattr(self, step["op"])(step)
            except AssertionError as exc:
                raise AssertionError(f"step {i} {step}: {exc}") from None
            self.mark = self.now

    # ---- the ops (client_cases.json's `about` says what each means) ----------------------------------------

    def submit(self, step: dict[str, Any]) -> None:
        job_id, stream = step["job"], bool(step.get("stream"))
        future: Future = Future()
        chunks: list[bytes] = []

        def sink(chunk: AudioChunk) -> None:
            chunks.append(chunk.pcm)

        self.jobs[job_id] = (future, self.now, chunks, None)
        self.tracker.start(Submit(job_id=job_id, text=f"text of {job_id}", stream=stream), future,
                           step["timeout_s"], sink if stream else None, self.now)

    def expect_submit(self, step: dict[str, Any]) -> None:
        at, msg = self.advance_until_sent()
        assert msg.command is Command.SUBMIT and msg.body.job_id == step["job"], f"got {msg.command.name} {msg.body}"
        retried = msg.body.job_id in self.retried
        self.retried.discard(msg.body.job_id)
        self.check_bounds("the SUBMIT", at - self.mark, step.get("delay_s"))
        if "retry_first" in step:
            assert retried is step["retry_first"], f"RETRY before the SUBMIT: {retried}"

    def expect_cancel(self, step: dict[str, Any]) -> None:
        _at, msg = self.advance_until_sent()
        assert msg.command is Command.CANCEL and msg.body.job_id == step["job"], f"got {msg.command.name} {msg.body}"

    def expect_quiet(self, step: dict[str, Any]) -> None:
        self.advance(self.now + step["for_s"])
        assert not self.sent and not self.retried, \
            f"unexpected {[m.command.name for _, m in self.sent]} retried={self.retried}"

    def send(self, step: dict[str, Any]) -> None:
        job_id, command = step["job"], Command[step["command"]]
        if command is Command.ACCEPTED:
            self.tracker.on_accepted(Accepted(job_id=job_id, state=JobState.QUEUED, queue_depth=0), self.now)
        elif command is Command.ERROR:
            self.tracker.on_error(Error(job_id=job_id, code=step["code"], message=step.get("message", ""),
                                        retryable=step["retryable"]), self.now)
        elif command is Command.PARTIAL:
            self.tracker.on_partial(Partial(job_id=job_id, attempt=1, seq=step["seq"], sample_rate=16000),
                                    chunk_pcm(step["seq"]), self.now)
        else:
            pcm = b"".join(chunk_pcm(k) for k in range(step.get("chunks", 1)))
            self.tracker.on_result(Result(job_id=job_id, attempt=1, worker_id="w-x", engine="tone", model="m",
                                          sample_rate=16000, num_samples=len(pcm) // 2), pcm)
        future = self.jobs[job_id][0]
        if future.done() and job_id not in self.settled:
            self.settled[job_id] = self.now

    def reject_submits(self, step: dict[str, Any]) -> None:
        count, end = 0, self.now + step["for_s"]
        while self.now < end:
            self.advance(self.now + STEP_S)
            while self.sent:
                _at, msg = self.sent.pop(0)
                assert msg.command is Command.SUBMIT and msg.body.job_id == step["job"], \
                    f"got {msg.command.name} {msg.body}"
                self.retried.discard(step["job"])
                count += 1
                self.tracker.on_error(Error(job_id=step["job"], code=step["code"], retryable=True), self.now)
        assert count >= step["min_count"], f"only {count} SUBMITs"

    def expect_outcome(self, step: dict[str, Any]) -> None:
        future, submitted_at, chunks, _ = self.jobs[step["job"]]
        end = self.now + 60
        while not future.done():
            assert self.now < end, "the call did not end within 60 s of fake time"
            self.advance(self.now + STEP_S)
        self.check_bounds("the call", self.settled[step["job"]] - submitted_at, step.get("elapsed_s"))
        error = future.exception()
        if step["outcome"] == "result":
            assert error is None, f"failed with {error!r}"
            if "chunks" in step:
                assert len(chunks) == step["chunks"] and b"".join(chunks) == future.result().pcm
        elif step["outcome"] == "timeout":
            assert isinstance(error, ClientTimeout), f"ended with {error!r}"
        else:
            assert isinstance(error, RemoteError), f"ended with {error!r}"
            assert (error.code, error.retryable) == (step["code"], step["retryable"])


TRACKER_CASES = [c for c in CASES["cases"] if not PING_OPS & {s["op"] for s in c["steps"]}]


def test_most_cases_need_no_broker_liveness() -> None:
    assert len(TRACKER_CASES) >= len(CASES["cases"]) - 3


@pytest.mark.parametrize("case", TRACKER_CASES, ids=[c["name"] for c in TRACKER_CASES])
def test_case_on_a_fake_clock(case: dict[str, Any]) -> None:
    FakeClockRun(case).run(case["steps"])
