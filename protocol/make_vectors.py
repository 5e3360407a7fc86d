"""Write the golden vectors in protocol/vectors/ from the examples below.

Run after changing PROTOCOL.md: `python protocol/make_vectors.py`. The tests (Python and Node) check that
decoding each vector gives its `body` and that encoding `body` gives the same bytes, so both
implementations speak identical frames. Malformed vectors carry `error` instead: decoders must reject them.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import Any

from tts_protocol import Command, ErrorCode, body_for, decode, encode, output_filename

HERE = Path(__file__).resolve().parent / "vectors"

PCM = struct.pack("<4h", 0, 1000, -1000, 32767)

VALID: list[tuple[str, Command, dict[str, Any], bytes | None]] = [
    ("submit_minimal", Command.SUBMIT, {"job_id": "job-1", "text": "Hello, world!"}, None),
    (
        "submit_full",
        Command.SUBMIT,
        {
            "job_id": "line-1-1-00ff",
            "text": "Héllo — wörld ✓",
            "speaker": "default",
            "model": "piper:en_US-joe-medium",
            "priority": "high",
            "deadline_ms": 30000,
            "timeout_ms": 600000,
            "stream": True,
            "voice": {"length_scale": 1.15, "seed": 42, "normalize": True, "style": "calm", "unset": None},
            "cache": False,
        },
        None,
    ),
    ("cancel", Command.CANCEL, {"job_id": "job-1"}, None),
    ("job_status", Command.JOB_STATUS, {"req_id": "r1", "job_id": "job-1"}, None),
    ("broker_status", Command.BROKER_STATUS, {"req_id": "r2", "workers_offset": 0, "workers_limit": None,
                                              "worker_prefix": None}, None),
    ("broker_status_page", Command.BROKER_STATUS, {"req_id": "r2", "workers_offset": 100, "workers_limit": 50,
                                                   "worker_prefix": "gpu-box/"}, None),
    ("ping", Command.PING, {"req_id": "r3"}, None),
    ("reload", Command.RELOAD,
     {"req_id": "r4", "model": "fish-speech", "options": {"checkpoint": "/models/s1", "model_version": "s1-mini"}},
     None),
    ("reload_reply", Command.RELOAD_REPLY, {"req_id": "r4", "workers": 2}, None),
    ("jobs", Command.JOBS, {"req_id": "r5", "state": "failed", "limit": 20}, None),
    ("retry", Command.RETRY, {"req_id": "r6", "job_id": "job-1"}, None),
    ("get_result", Command.GET_RESULT, {"req_id": "r7", "job_id": "job-1"}, None),
    ("drain_worker", Command.DRAIN_WORKER, {"req_id": "r7", "worker": "box/0", "host": None}, None),
    ("drain_host", Command.DRAIN_WORKER, {"req_id": "r8", "worker": None, "host": "gpu-box-1"}, None),
    ("pause_model", Command.PAUSE_MODEL, {"req_id": "r9", "model": "fish-speech"}, None),
    ("resume_model", Command.RESUME_MODEL, {"req_id": "r10", "model": "fish-speech"}, None),
    ("admin_reply", Command.ADMIN_REPLY,
     {"req_id": "r9", "workers": ["w-0123456789abcdef"], "paused": ["fish-speech"]}, None),
    (
        "jobs_reply",
        Command.JOBS_REPLY,
        {
            "req_id": "r5",
            "jobs": [
                {
                    "job_id": "job-1",
                    "state": "failed",
                    "attempt": 3,
                    "priority": "low",
                    "model": "tone",
                    "worker_id": None,
                    "queued_ms": 20,
                    "run_ms": 3100,
                    "error": {"code": "max_attempts", "message": "gave up after 3 attempts", "retryable": False},
                    "workers": ["w-1", "w-2", "w-3"],
                    "accepted_at_ms": 1764045000000,
                    "cached": False,
                }
            ],
        },
        None,
    ),
    ("accepted", Command.ACCEPTED, {"job_id": "job-1", "state": "queued", "queue_depth": 3, "duplicate": False}, None),
    (
        "partial",
        Command.PARTIAL,
        {"job_id": "job-1", "attempt": 1, "seq": 0, "sample_rate": 22050, "channels": 1, "sample_format": "s16le"},
        PCM,
    ),
    (
        "result",
        Command.RESULT,
        {
            "job_id": "job-1",
            "attempt": 2,
            "worker_id": "w-0123456789abcdef",
            "engine": "tone",
            "model": "tone-v1",
            "sample_rate": 16000,
            "channels": 1,
            "sample_format": "s16le",
            "num_samples": 4,
            "gen_time_ms": 12,
            "queue_time_ms": 3,
            "total_time_ms": 20,
            "cached": True,
        },
        PCM,
    ),
    (
        "result_reply",
        Command.RESULT_REPLY,
        {
            "req_id": "r7",
            "result": {
                "job_id": "job-1",
                "attempt": 1,
                "worker_id": "w-0123456789abcdef",
                "engine": "tone",
                "model": "tone-v1",
                "sample_rate": 16000,
                "channels": 1,
                "sample_format": "s16le",
                "num_samples": 4,
                "gen_time_ms": 12,
                "queue_time_ms": 3,
                "total_time_ms": 20,
                "cached": False,
            },
        },
        PCM,
    ),
    (
        "error_job",
        Command.ERROR,
        {"job_id": "job-1", "req_id": None, "code": "queue_full", "message": "queue is full (10000 jobs)",
         "retryable": True},
        None,
    ),
    (
        "error_no_audio",
        Command.ERROR,
        {"job_id": "job-2", "req_id": None, "code": "no_audio",
         "message": "the engine produced no audio for this text (nothing speakable in it?)", "retryable": False},
        None,
    ),
    (
        "worker_fail_no_audio",
        Command.W_FAIL,
        {"job_id": "job-2", "attempt": 1, "code": "no_audio", "message": "no audio", "retryable": False},
        None,
    ),
    (
        "job_status_reply",
        Command.JOB_STATUS_REPLY,
        {
            "req_id": "r1",
            "job": {
                "job_id": "job-1",
                "state": "failed",
                "attempt": 3,
                "priority": "normal",
                "model": None,
                "worker_id": None,
                "queued_ms": 1500,
                "run_ms": None,
                "error": {"code": "max_attempts", "message": "worker died 3 times", "retryable": False},
            },
        },
        None,
    ),
    (
        "broker_status_reply",
        Command.BROKER_STATUS_REPLY,
        {
            "req_id": "r2",
            "status": {
                "broker_id": "b-5e1f",
                "version": "0.1.0",
                "uptime_s": 12.5,
                "draining": False,
                "queue": {"depth": 2, "max": 10000, "by_priority": {"high": 0, "normal": 2, "low": 0}},
                "jobs": {"running": 1, "done": 40, "failed": 0, "retained": 41},
                "workers": [
                    {
                        "worker_id": "w-0123456789abcdef",
                        "name": "box/0",
                        "host": "box",
                        "pid": 4242,
                        "engine": "tone",
                        "model": "tone-v1",
                        "device": "cpu",
                        "state": "busy",
                        "capacity": 1,
                        "busy": 1,
                        "jobs_done": 40,
                        "jobs_failed": 0,
                        "mean_gen_ms": 2.5,
                        "rss_bytes": 52428800,
                        "gpu_mem_bytes": 0,
                        "load_time_ms": 1,
                        "last_seen_ms": 120,
                        "warm": ["narrator"],
                        "engine_stats": {"token_cache": {"hits": 3, "misses": 1}},
                        "supervisor": {"workers": 1, "target": 2, "min": 1, "max": 4,
                                       "last": "up: queue 2 > 0 idle slots"},
                    }
                ],
                "paused": ["fish-speech"],
                "worker_count": 1,
                "workers_offset": 0,
                "summary": {"workers": 1, "capacity": 1, "busy": 1, "idle_slots": 0, "draining": 0,
                            "by_key": {"tone": {"workers": 1, "capacity": 1, "busy": 1},
                                       "tone:tone-v1": {"workers": 1, "capacity": 1, "busy": 1}},
                            "keys_omitted": 0},
            },
        },
        None,
    ),
    ("pong", Command.PONG, {"req_id": "r3", "broker_id": "b-5e1f", "time_ms": 1764045000000}, None),
    (
        "worker_ready",
        Command.W_READY,
        {
            "worker_id": "w-0123456789abcdef",
            "name": "gpu-box-1/0",
            "host": "gpu-box-1",
            "pid": 4242,
            "engine": "piper",
            "model": "en_US-joe-medium",
            "capacity": 1,
            "device": "cpu",
            "sample_rate": 22050,
            "licence": "GPL-3.0-or-later",
            "load_time_ms": 350,
        },
        None,
    ),
    (
        "worker_ready_after_failover",
        Command.W_READY,
        {
            "worker_id": "w-fedcba9876543210",
            "name": "gpu-box-1/0",
            "engine": "tone",
            "capacity": 2,
            "running": [{"job_id": "job-7", "attempt": 2}, {"job_id": "job-9", "attempt": 1}],
        },
        None,
    ),
    (
        "worker_heartbeat",
        Command.W_HEARTBEAT,
        {"stats": {"jobs_done": 10, "jobs_failed": 1, "mean_gen_ms": 95.5, "rss_bytes": 157286400, "busy": 1,
                   "warm": ["narrator"]}},
        None,
    ),
    (
        "worker_heartbeat_capacity",
        Command.W_HEARTBEAT,
        {"stats": {"busy": 3, "engine": {"health": "up", "ttfa_p90_ms": 412}}, "capacity": 5},
        None,
    ),
    (
        "worker_partial",
        Command.W_PARTIAL,
        {"job_id": "job-1", "attempt": 1, "seq": 2, "sample_rate": 22050, "channels": 1, "sample_format": "s16le"},
        PCM,
    ),
    (
        "worker_result",
        Command.W_RESULT,
        {"job_id": "job-1", "attempt": 1, "sample_rate": 22050, "channels": 1, "sample_format": "s16le",
         "gen_time_ms": 95, "deterministic": True},
        PCM,
    ),
    (
        "worker_fail",
        Command.W_FAIL,
        {"job_id": "job-1", "attempt": 1, "code": "engine_error", "message": "unknown speaker 'x'", "retryable": False},
        None,
    ),
    ("worker_disconnect", Command.W_DISCONNECT, {"reason": "SIGTERM"}, None),
    (
        "broker_job",
        Command.B_JOB,
        {
            "job_id": "job-1",
            "attempt": 1,
            "text": "Hello",
            "speaker": None,
            "model": None,
            "voice": {},
            "stream": False,
            "timeout_ms": 300000,
        },
        None,
    ),
    ("broker_cancel", Command.B_CANCEL, {"job_id": "job-1", "attempt": 1, "reason": "deadline"}, None),
    ("broker_heartbeat", Command.B_HEARTBEAT, {}, None),
    ("broker_reload", Command.B_RELOAD, {"options": {"checkpoint": "/models/s1"}}, None),
    ("broker_disconnect", Command.B_DISCONNECT, {"reason": "unknown worker"}, None),
]

# (name, side header, frames, to_broker, what is wrong)
INVALID: list[tuple[str, bytes, list[bytes], bool, str]] = [
    ("bad_header", b"TTSC2", [b"XXXX2\x01", b"\x80"], True, "unknown header"),
    ("other_side_header", b"TTSC2", [b"TTSW2\x01", b"\x80"], True, "worker header on the client port"),
    ("short_head", b"TTSC2", [b"TTSC2", b"\x80"], True, "frame 0 without a command byte"),
    ("unknown_command", b"TTSC2", [b"TTSC2\x7f", b"\x80"], True, "unknown command byte"),
    ("wrong_direction", b"TTSC2", [b"TTSC2\x11", b"\x80"], True, "ACCEPTED sent to the broker"),
    ("not_msgpack", b"TTSC2", [b"TTSC2\x01", b"\xc1\xc1"], True, "body is not msgpack"),
    ("body_not_map", b"TTSC2", [b"TTSC2\x01", b"\x93\x01\x02\x03"], True, "body is an array"),
    ("missing_text", b"TTSC2", [b"TTSC2\x01", b"\x81\xa6job_id\xa1j"], True, "SUBMIT without text"),
    ("bad_job_id", b"TTSC2", [b"TTSC2\x01", b"\x82\xa6job_id\xa3a/b\xa4text\xa1x"], True, "job id with /"),
    ("wrong_type", b"TTSC2", [b"TTSC2\x05", b"\x81\xa6req_id\x01"], True, "req_id is an int"),
    ("too_few_frames", b"TTSC2", [b"TTSC2\x05"], True, "1 frame"),
    ("unexpected_payload", b"TTSC2", [b"TTSC2\x05", b"\x81\xa6req_id\xa1r", b"xx"], True, "PING with payload"),
    ("missing_payload", b"TTSW2",
     [b"TTSW2\x24", b"\x83\xa6job_id\xa1j\xa7attempt\x01\xabsample_rate\xcd\x56\x22"], True,
     "RESULT without audio"),
    ("ttsp1_message", b"TTSC2", [b"", b"TTSC1", b"\x05", b"\x81\xa6req_id\xa1r"], True,
     "a TTSP/1 message (empty delimiter first)"),
]

FILENAMES = [
    {"stream_index": 1, "id": 1, "ext": "wav", "expected": "1_1.wav"},
    {"stream_index": 0, "id": "intro-line", "ext": "flac", "expected": "0_intro-line.flac"},
    {"stream_index": 2, "id": "../../etc/passwd", "ext": "wav", "expected": "2__.._etc_passwd-3754d6cb.wav"},
    {"stream_index": "..", "id": ".hidden", "ext": "ogg", "expected": "_-5ec1f7e7_hidden-16924190.ogg"},
    {"stream_index": 3, "id": "h\u00e9llo w\u00f6rld", "ext": "mp3", "expected": "3_h_llo_w_rld-a1003f7d.mp3"},
    {"stream_index": 4, "id": "", "ext": "wav", "expected": "4__-e3b0c442.wav"},
    {"stream_index": 6, "id": "a\U0001F600b", "ext": "wav", "expected": "6_a_b-6fba5b2e.wav"},
    {"stream_index": 5, "id": "x" * 80, "ext": "wav", "expected": "5_" + "x" * 55 + "-d929cdee.wav"},
    # two unsafe ids that made-safe alone would share one file (issue 19): the digest tells them apart
    {"stream_index": 7, "id": "a/b", "ext": "wav", "expected": "7_a_b-c14cddc0.wav"},
    {"stream_index": 7, "id": "a?b", "ext": "wav", "expected": "7_a_b-c2a7b64a.wav"},
]


def main() -> None:
    HERE.mkdir(parents=True, exist_ok=True)
    for old in HERE.iterdir():  # regenerate the frame vectors; other files here (client_cases.json) stay
        if old.is_dir():
            shutil.rmtree(old)
    manifest: list[dict[str, Any]] = []
    for name, command, body, payload in VALID:
        frames = encode(command, body_for(command, body), payload)
        manifest.append(_write(name, frames, {"valid": True, "command": command.name, "command_byte": command.value,
                                               "side": command.side.value.decode(), "to_broker": command.to_broker,
                                               "body": _wire_body(command, frames)}))
    for name, side, frames, to_broker, why in INVALID:
        manifest.append(_write(name, frames, {"valid": False, "side": side.decode(), "to_broker": to_broker,
                                               "error": why}))
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    for case in FILENAMES:
        got = output_filename(case["stream_index"], case["id"], case["ext"])
        assert got == case["expected"], (case, got)
    (HERE / "filenames.json").write_text(json.dumps(FILENAMES, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    codes = {code.value: code.retryable for code in ErrorCode}  # every codec must know exactly these
    (HERE / "error_codes.json").write_text(json.dumps(codes, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {len(manifest)} vectors and {len(FILENAMES)} file-name cases to {HERE}")


def _wire_body(command: Command, frames: list[bytes]) -> dict[str, Any]:
    """The body as it is on the wire, defaults included."""
    return decode(frames, side=command.side, to_broker=command.to_broker).body.to_wire()


def _write(name: str, frames: list[bytes], entry: dict[str, Any]) -> dict[str, Any]:
    folder = HERE / name
    folder.mkdir()
    files = []
    for i, frame in enumerate(frames):
        path = folder / f"{i}.bin"
        path.write_bytes(frame)
        files.append(f"{name}/{i}.bin")
    return {"name": name, "frames": files, **entry}


if __name__ == "__main__":
    main()
