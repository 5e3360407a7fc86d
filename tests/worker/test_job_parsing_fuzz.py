"""Fuzz the worker's parsing of broker messages (B_JOB above all): only ProtocolError, and bounded jobs.

In-process: `decode` as the worker's connection calls it, then the SynthesisRequest the daemon builds from a
JOB. The process-level half (a real worker fed the same frames) is in tests/e2e/test_hardening.py.
"""

from __future__ import annotations

import math

import pytest
from fuzzing import Budget, frames_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tts_protocol import ProtocolError, Side, decode
from tts_protocol.constants import Command
from tts_protocol.messages import MAX_ATTEMPT, MAX_DURATION_MS, JobAssignment

from tts_worker.engines.base import SynthesisRequest

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]

VALID_JOB = {"job_id": "fz-1", "attempt": 1, "text": "hello", "speaker": None, "model": "tone", "voice": {},
             "stream": False, "timeout_ms": 1000, "reason": "fuzz", "options": {}}
BROKER_TO_WORKER = [c for c in Command if c.side is Side.WORKER and not c.to_broker]


def test_decode_of_broker_messages_raises_only_protocol_error_and_jobs_are_bounded() -> None:
    budget = Budget(10.0)

    @settings(max_examples=2000, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(frames=st.one_of(frames_for(Side.WORKER, VALID_JOB, [Command.B_JOB]),
                            frames_for(Side.WORKER, VALID_JOB, BROKER_TO_WORKER)))
    def case(frames: list[bytes]) -> None:
        if not budget.spend():
            return
        try:
            message = decode(frames, side=Side.WORKER, to_broker=False)
        except ProtocolError as exc:
            assert str(exc)
            return
        if isinstance(message.body, JobAssignment):
            job = message.body
            assert 0 <= job.timeout_ms <= MAX_DURATION_MS and 1 <= job.attempt <= MAX_ATTEMPT
            request = SynthesisRequest(job_id=job.job_id, text=job.text, speaker=job.speaker,
                                       voice=dict(job.voice), stream=job.stream, timeout_s=job.timeout_ms / 1000.0)
            assert math.isfinite(request.timeout_s)

    case()
    print(f"worker job parsing: {budget.cases} fuzz cases")
    assert budget.cases >= 1000, f"only {budget.cases} fuzz cases ran in the budget"
