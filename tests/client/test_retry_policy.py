"""The retry policy (PROTOCOL.md section 9): constants against protocol/retry_policy.json, and every case of
protocol/vectors/client_cases.json run against a real ROUTER socket that this test scripts.

client/node/test/retryPolicy.test.ts runs the same cases against the Node client.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest
import zmq

from tts_protocol import Command
from tts_protocol.constants import JobState
from tts_protocol.messages import Accepted, Error, Partial, Result

from tts_client import ClientSettings, ClientTimeout, RemoteError, SynthesisStream, TtsClient, retry
from tts_client.client import JobHandle

from peers import ScriptedBroker

pytestmark = pytest.mark.timeout(60)

PROTOCOL_DIR = Path(__file__).resolve().parents[2] / "protocol"
POLICY = json.loads((PROTOCOL_DIR / "retry_policy.json").read_text())
CASES = json.loads((PROTOCOL_DIR / "vectors" / "client_cases.json").read_text())
EARLY_S, LATE_S = CASES["tolerance_s"]["early"], CASES["tolerance_s"]["late"]


def test_constants_match_the_policy_file() -> None:
    backoff = POLICY["backoff"]
    assert (retry.BACKOFF_INITIAL_S, retry.BACKOFF_FACTOR, retry.BACKOFF_CAP_S, retry.BACKOFF_JITTER_FRACTION) == (
        backoff["initial_s"], backoff["factor"], backoff["cap_s"], backoff["jitter_fraction"])
    assert (retry.RESUBMIT_AFTER_S, retry.PING_INTERVAL_S, retry.BROKER_LOST_PINGS) == (
        POLICY["resubmit_after_s"], POLICY["ping_interval_s"], POLICY["broker_lost_pings"])
    defaults = ClientSettings.model_fields
    assert defaults["retry_backoff_initial_s"].default == backoff["initial_s"]
    assert defaults["retry_backoff_max_s"].default == backoff["cap_s"]
    assert defaults["resubmit_after_s"].default == POLICY["resubmit_after_s"]
    assert defaults["ping_interval_s"].default == POLICY["ping_interval_s"]
    assert defaults["cancel_on_timeout"].default is POLICY["cancel_on_timeout"]


def test_backoff_follows_the_formula_and_grows_until_the_cap() -> None:
    backoff = POLICY["backoff"]
    longest_before = 0.0
    for n in range(12):
        ceiling = min(backoff["cap_s"], backoff["initial_s"] * backoff["factor"] ** n)
        low = retry.backoff_delay_s(n, uniform=lambda: 1.0)  # the infimum: u < 1
        high = retry.backoff_delay_s(n, uniform=lambda: 0.0)
        assert high == pytest.approx(ceiling)
        assert low == pytest.approx(ceiling * (1 - backoff["jitter_fraction"]))
        if ceiling < backoff["cap_s"]:
            assert low > longest_before  # each wait is longer than any before it
        longest_before = high
        assert all(low <= retry.backoff_delay_s(n) <= high for _ in range(50))
    assert retry.backoff_delay_s(10_000) == pytest.approx(backoff["cap_s"], rel=0.25)


def chunk_pcm(k: int) -> bytes:
    return bytes((k + 1, 0)) * 8


class Job:
    def __init__(self, handle: JobHandle | SynthesisStream) -> None:
        self.handle = handle
        self.submitted_at = time.monotonic()
        self.settled_at: Optional[float] = None
        self.chunks: Optional[list[bytes]] = None
        handle.future.add_done_callback(self._settled)

    def _settled(self, _future: Any) -> None:
        self.settled_at = time.monotonic()


class CaseRunner:
    def __init__(self, case: dict[str, Any], ctx: zmq.Context) -> None:
        conf = {**CASES["defaults"]["client"], **case.get("client", {})}
        self.broker = ScriptedBroker(ctx)
        self.client = TtsClient(self.broker.url, timeout_s=60, request_timeout_s=5,
                                ping_interval_s=conf["ping_interval_s"], resubmit_after_s=conf["resubmit_after_s"],
                                retry_backoff_initial_s=conf["backoff_initial_s"],
                                retry_backoff_max_s=conf["backoff_cap_s"])
        self.jobs: dict[str, Job] = {}
        self.mark = time.monotonic()

    def close(self) -> None:
        self.client.close()
        self.broker.close()

    def run(self, steps: list[dict[str, Any]]) -> None:
        for i, step in enumerate(steps):
            try:
                getattr(self, step["op"])(step)
            except AssertionError as exc:
                raise AssertionError(f"step {i} {step}: {exc}") from None
            self.mark = time.monotonic()

    def check_bounds(self, what: str, took_s: float, bounds: Optional[list[float]]) -> None:
        if bounds is not None:
            low, high = bounds
            assert low - EARLY_S <= took_s <= high + LATE_S, f"{what} took {took_s:.3f}s, expected {bounds}"

    def submit(self, step: dict[str, Any]) -> None:
        text, job_id, timeout_s = f"text of {step['job']}", step["job"], step["timeout_s"]
        if step.get("stream"):
            self.jobs[job_id] = Job(self.client.stream(text, job_id=job_id, timeout_s=timeout_s))
        else:
            self.jobs[job_id] = Job(self.client.submit(text, job_id=job_id, timeout_s=timeout_s))

    def expect_submit(self, step: dict[str, Any]) -> None:
        at, msg = self.broker.next()
        assert msg.command is Command.SUBMIT and msg.body.job_id == step["job"], f"got {msg.command.name} {msg.body}"
        retried = msg.body.job_id in self.broker.retried
        self.broker.retried.discard(msg.body.job_id)
        self.check_bounds("the SUBMIT", at - self.mark, step.get("delay_s"))
        if "retry_first" in step:
            assert retried is step["retry_first"], f"RETRY before the SUBMIT: {retried}"

    def expect_cancel(self, step: dict[str, Any]) -> None:
        _at, msg = self.broker.next()
        assert msg.command is Command.CANCEL and msg.body.job_id == step["job"], f"got {msg.command.name} {msg.body}"

    def expect_quiet(self, step: dict[str, Any]) -> None:
        deadline = time.monotonic() + step["for_s"]
        while (left := deadline - time.monotonic()) > 0:
            self.broker.pump(left)
            assert not self.broker.backlog and not self.broker.retried, \
                f"unexpected {[m.command.name for _, m in self.broker.backlog]} retried={self.broker.retried}"

    def send(self, step: dict[str, Any]) -> None:
        job_id, command = step["job"], Command[step["command"]]
        if command is Command.ACCEPTED:
            self.broker.reply(command, Accepted(job_id=job_id, state=JobState.QUEUED, queue_depth=0))
        elif command is Command.ERROR:
            self.broker.reply(command, Error(job_id=job_id, code=step["code"], message=step.get("message", ""),
                                            retryable=step["retryable"]))
        elif command is Command.PARTIAL:
            self.broker.reply(command, Partial(job_id=job_id, attempt=1, seq=step["seq"], sample_rate=16000),
                             chunk_pcm(step["seq"]))
        else:
            pcm = b"".join(chunk_pcm(k) for k in range(step.get("chunks", 1)))
            self.broker.reply(command, Result(job_id=job_id, attempt=1, worker_id="w-x", engine="tone", model="m",
                                             sample_rate=16000, num_samples=len(pcm) // 2), pcm)

    def answer_pings(self, step: dict[str, Any]) -> None:
        target = self.broker.pings_answered + step["count"]
        deadline = time.monotonic() + 5
        while self.broker.pings_answered < target:
            assert time.monotonic() < deadline, "the client stopped pinging"
            self.broker.pump(deadline - time.monotonic())

    def pings(self, step: dict[str, Any]) -> None:
        self.broker.answer_pings = step["answer"]

    def set_broker_id(self, step: dict[str, Any]) -> None:
        self.broker.broker_id = step["broker_id"]

    def reject_submits(self, step: dict[str, Any]) -> None:
        count, deadline = 0, time.monotonic() + step["for_s"]
        while (left := deadline - time.monotonic()) > 0:
            self.broker.pump(left)
            while self.broker.backlog:
                _at, msg = self.broker.backlog.popleft()
                assert msg.command is Command.SUBMIT and msg.body.job_id == step["job"], \
                    f"got {msg.command.name} {msg.body}"
                count += 1
                self.broker.reply(Command.ERROR, Error(job_id=step["job"], code=step["code"], retryable=True))
        assert count >= step["min_count"], f"only {count} SUBMITs"

    def expect_outcome(self, step: dict[str, Any]) -> None:
        job = self.jobs[step["job"]]
        deadline = time.monotonic() + 10
        while not job.handle.future.done():
            assert time.monotonic() < deadline, "the call did not end"
            self.broker.pump(0.02)
        assert job.settled_at is not None
        self.check_bounds("the call", job.settled_at - job.submitted_at, step.get("elapsed_s"))
        error = job.handle.future.exception()
        if step["outcome"] == "result":
            assert error is None, f"failed with {error!r}"
            if isinstance(job.handle, SynthesisStream):
                if job.chunks is None:
                    job.chunks = [chunk.pcm for chunk in job.handle]
                assert len(job.chunks) == step["chunks"] and b"".join(job.chunks) == job.handle.result.pcm
        elif step["outcome"] == "timeout":
            assert isinstance(error, ClientTimeout), f"ended with {error!r}"
        else:
            assert isinstance(error, RemoteError), f"ended with {error!r}"
            assert (error.code, error.retryable) == (step["code"], step["retryable"])


@pytest.fixture
def runner_for(ctx: zmq.Context) -> Iterator[Any]:
    made: list[CaseRunner] = []

    def make(case: dict[str, Any]) -> CaseRunner:
        made.append(CaseRunner(case, ctx))
        return made[-1]

    yield make
    for runner in made:
        runner.close()


@pytest.mark.parametrize("case", CASES["cases"], ids=[c["name"] for c in CASES["cases"]])
def test_scripted_broker_case(case: dict[str, Any], runner_for: Any) -> None:
    runner_for(case).run(case["steps"])
