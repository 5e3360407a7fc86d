"""tts_protocol.fastpack: the hand-packed per-job bodies are byte-identical to the protocol models' encoding."""

from __future__ import annotations

import pytest

from tts_protocol import fastpack as wire
from tts_protocol.codec import pack_body
from tts_protocol.constants import JobState
from tts_protocol.messages import Accepted, JobAssignment, Result

pytestmark = pytest.mark.unit


def test_accepted_matches_model() -> None:
    for state in JobState:
        for dup in (False, True):
            model = Accepted(job_id="j-1", state=state, queue_depth=7, duplicate=dup)
            assert wire.accepted("j-1", state, 7, dup) == pack_body(model)


def test_job_matches_model() -> None:
    voice = {"length_scale": 1.1, "seed": 3, "style": None}
    model = JobAssignment(job_id="j-1", attempt=2, text="héllo", speaker="amy", model="piper", voice=voice,
                          stream=True, timeout_ms=1500)
    assert wire.job("j-1", 2, "héllo", "amy", "piper", voice, True, 1500) == pack_body(model)
    bare = JobAssignment(job_id="j", attempt=1, text="x")
    assert wire.job("j", 1, "x", None, None, {}, False, 0) == pack_body(bare)


def test_result_matches_model() -> None:
    model = Result(job_id="j", attempt=1, worker_id="w-1", engine="tone", model="tone-v1", sample_rate=16000,
                   channels=1, sample_format="s16le", num_samples=10, gen_time_ms=3, queue_time_ms=4, total_time_ms=9,
                   cached=True)
    assert wire.result("j", 1, "w-1", "tone", "tone-v1", 16000, 1, "s16le", 10, 3, 4, 9, True) == pack_body(model)
