"""Packed bodies for the per-job messages (ACCEPTED, JOB, RESULT), built without model validation.

These three go out for every job; packing a plain dict in the models' field order is about 4x cheaper than
constructing and dumping the pydantic models. Callers pass values taken from messages that were already
validated. tests/protocol/test_fastpack.py checks the bytes equal the models' encoding.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import msgpack

from tts_protocol.constants import JobState

_pack = msgpack.Packer(use_bin_type=True).pack


def accepted(job_id: str, state: JobState, queue_depth: int, duplicate: bool) -> bytes:
    return _pack({"job_id": job_id, "state": state.value, "queue_depth": queue_depth, "duplicate": duplicate})


def job(job_id: str, attempt: int, text: str, speaker: Optional[str], model: Optional[str],
        voice: Mapping[str, Any], stream: bool, timeout_ms: int) -> bytes:
    return _pack({"job_id": job_id, "attempt": attempt, "text": text, "speaker": speaker, "model": model,
                  "voice": dict(voice), "stream": stream, "timeout_ms": timeout_ms})


def result(job_id: str, attempt: int, worker_id: str, engine: str, model: str, sample_rate: int, channels: int,
           sample_format: str, num_samples: int, gen_time_ms: int, queue_time_ms: int, total_time_ms: int,
           cached: bool = False) -> bytes:
    return _pack({"job_id": job_id, "attempt": attempt, "worker_id": worker_id, "engine": engine, "model": model,
                  "sample_rate": sample_rate, "channels": channels, "sample_format": sample_format,
                  "num_samples": num_samples, "gen_time_ms": gen_time_ms, "queue_time_ms": queue_time_ms,
                  "total_time_ms": total_time_ms, "cached": cached})
