"""One line from engine PCM to its files: post-processing, the check, word timings. Runs in a process pool.

`finish_line` is the pool's task: it takes plain values (picklable, no client objects), writes the audio, the
timings JSON and the WebVTT atomically, and returns what the report and the lock file need, with the cost of
each stage.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import secrets
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from tts_studio import dsp, speech

CLIP_LEVEL = 32767 / 32768 - 1e-6


@dataclasses.dataclass(frozen=True, slots=True)
class ProcessSettings:
    """Everything about post-processing and checking that shapes a line's file (part of the line's hash)."""

    lufs: float = -23.0
    true_peak_db: float = -1.0
    pad_ms: float = 100.0
    fmt: str = "wav"
    sample_rate: Optional[int] = None  # None: the engine's rate
    max_wer: float = 0.6
    max_clipped: float = 0.001  # fraction of engine samples at full scale
    min_s_per_char: float = 0.025
    max_s_per_char: float = 0.25
    slack_s: float = 0.6  # allowed on top of the per-character bounds
    check: bool = True
    check_lm: str = "script"  # "script": a model of the manifest's own words; "general": pocketsphinx's
    timings: bool = True

    def identity(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True, slots=True)
class LineTask:
    """The pool's input for one synthesised line."""

    line_id: str
    text: str
    pcm: bytes
    rate: int
    channels: int
    audio_path: str
    timings_path: str
    vtt_path: str
    settings: ProcessSettings


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        with open(tmp, "xb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _vtt_time(seconds: float) -> str:
    ms = int(round(seconds * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def webvtt(words: list[speech.Word]) -> str:
    """One cue per word (players show the current word; subtitle tools merge cues as they like)."""
    cues = ["WEBVTT", ""]
    for i, w in enumerate(words, 1):
        cues += [str(i), f"{_vtt_time(w.start_s)} --> {_vtt_time(max(w.end_s, w.start_s + 0.001))}", w.word, ""]
    return "\n".join(cues)


def check_problems(task: LineTask, raw: np.ndarray, speech_s: float, wer: Optional[float]) -> list[str]:
    """Why this line fails its check (empty: it passes)."""
    s = task.settings
    problems: list[str] = []
    if dsp.speech_bounds(raw, task.rate) is None:
        return ["silent"]
    clipped = float(np.mean(np.abs(raw) >= CLIP_LEVEL)) if len(raw) else 0.0
    if clipped > s.max_clipped:
        problems.append(f"clipped ({clipped:.2%} of samples at full scale)")
    chars = max(1, len(task.text))
    if speech_s < s.min_s_per_char * chars - s.slack_s:
        problems.append(f"too short for its text ({speech_s:.2f}s for {chars} characters)")
    if speech_s > s.max_s_per_char * chars + s.slack_s:
        problems.append(f"too long for its text ({speech_s:.2f}s for {chars} characters)")
    if wer is not None and wer > s.max_wer:
        problems.append(f"word error rate {wer:.2f} > {s.max_wer:.2f}")
    return problems


def finish_line(task: LineTask) -> dict[str, Any]:
    """Post-process, check, align and write one line; returns its report fields and stage costs (seconds)."""
    s = task.settings
    costs: dict[str, float] = {}
    t0 = time.perf_counter()
    samples = np.frombuffer(task.pcm, dtype="<i2").astype(np.float64) / 32768.0
    if task.channels > 1:
        samples = samples[: len(samples) - len(samples) % task.channels].reshape(-1, task.channels).mean(axis=1)
    raw = samples
    rate = s.sample_rate or task.rate
    x = dsp.resample(raw, task.rate, rate)
    x = dsp.trim(x, rate, s.pad_ms)
    bounds = dsp.speech_bounds(x, rate)
    speech_s = (bounds[1] - bounds[0]) / rate if bounds else 0.0
    costs["trim_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    x = dsp.conform(x, rate, lufs=s.lufs, true_peak_db_max=s.true_peak_db)
    x = np.clip(x, -1.0, 32767 / 32768)
    lufs = dsp.integrated_lufs(x, rate)
    peak = dsp.true_peak_db(x)
    costs["loudness_s"] = time.perf_counter() - t0
    x16k: Optional[np.ndarray] = None
    wer: Optional[float] = None
    heard: list[str] = []
    if s.check or s.timings:
        x16k = dsp.resample(x, rate, speech.RATE)
    if s.check and bounds is not None and x16k is not None:
        t0 = time.perf_counter()
        heard = speech.recognise(x16k)
        wer = speech.word_error_rate(speech.words_of(task.text), heard)
        costs["check_s"] = time.perf_counter() - t0
    problems = check_problems(task, raw, speech_s, wer) if s.check else []
    words: list[speech.Word] = []
    aligner = ""
    if s.timings and x16k is not None:
        t0 = time.perf_counter()
        words, aligner = speech.align(x16k, task.text) if bounds is not None else ([], "none (silent)")
        cap = math.floor(len(x) / rate * 1000) / 1000  # the 16 kHz copy may be a sample longer than the file
        words = [speech.Word(w.word, min(w.start_s, cap), min(w.end_s, cap)) for w in words]
        costs["align_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    from tts_client.audio import write_pcm

    pcm = np.round(x * 32767).astype("<i2").tobytes()
    audio_path = Path(task.audio_path)
    write_pcm(audio_path, pcm, rate, 1, s.fmt)
    if s.timings:
        body = {"id": task.line_id, "text": task.text, "aligner": aligner, "duration_s": len(x) / rate,
                "words": [dataclasses.asdict(w) for w in words]}
        _atomic_write(Path(task.timings_path), json.dumps(body, ensure_ascii=False, indent=1).encode())
        _atomic_write(Path(task.vtt_path), webvtt(words).encode())
    costs["write_s"] = time.perf_counter() - t0
    return {
        "duration_s": round(len(x) / rate, 3),
        "sample_rate": rate,
        "lufs": round(lufs, 2) if math.isfinite(lufs) else None,
        "true_peak_db": round(peak, 2) if math.isfinite(peak) else None,
        "wer": None if wer is None else round(wer, 3),
        "heard": " ".join(heard),
        "aligner": aligner or None,
        "problems": problems,
        "file_sha256": file_sha256(audio_path),
        "costs": costs,
    }


def warm_up(lm_path: Optional[str] = None) -> None:
    """Pool initializer: load the recogniser's model once per process, not on the first line."""
    speech.use_language_model(lm_path)
    speech._get_decoder()
