"""Reference voices: files on the worker host, one folder per speaker.

    VOICES_DIR/<speaker>/reference.wav  + reference.txt     (transcript of the audio, UTF-8)
    VOICES_DIR/<speaker>/a.flac + a.txt, b.ogg + b.txt ...  (several references: same-stem pairs)

Audio may be wav, flac, ogg or mp3 (decoded with soundfile, never torchaudio.load), mixed to mono and
resampled with soxr to the codec's rate. Deploy the same folder to every worker host (rsync, a shared or
container volume): the speaker name in a job is looked up on whichever worker runs it.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np

from tts_worker.engines.base import EngineError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
SPEAKER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
DEFAULT_SPEAKERS = ("default",)
MIN_REFERENCE_S = 0.2


@dataclasses.dataclass(frozen=True, slots=True)
class ReferenceFile:
    """One reference clip and its transcript, with what identifies this version of the file."""

    audio_path: Path
    transcript: str
    size: int
    mtime_ns: int


class VoiceLibrary:
    """Finds a speaker's reference files under one folder; EngineError for unknown or broken speakers."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser()

    def speakers(self) -> list[str]:
        """Speaker folders that hold at least one audio file (for preloading and listings)."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir()
            if p.is_dir() and SPEAKER_NAME.match(p.name) and any(
                f.suffix.lower() in AUDIO_SUFFIXES for f in p.iterdir() if f.is_file())
        )

    def references(self, speaker: str) -> list[ReferenceFile]:
        if not SPEAKER_NAME.match(speaker):
            raise EngineError(f"speaker name {speaker[:80]!r} is not valid (letters, digits, . _ -)")
        folder = self.root / speaker
        if not folder.is_dir():
            raise EngineError(f"unknown speaker {speaker!r}: no folder {folder} on this worker")
        refs = []
        for audio in sorted(folder.iterdir()):
            if not audio.is_file() or audio.suffix.lower() not in AUDIO_SUFFIXES:
                continue
            transcript_path = audio.with_suffix(".txt")
            if not transcript_path.is_file():
                raise EngineError(f"speaker {speaker!r}: {audio.name} has no transcript {transcript_path.name}")
            try:
                transcript = transcript_path.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise EngineError(f"speaker {speaker!r}: cannot read {transcript_path.name}: {exc}") from exc
            if not transcript:
                raise EngineError(f"speaker {speaker!r}: {transcript_path.name} is empty")
            stat = audio.stat()
            refs.append(ReferenceFile(audio, transcript, stat.st_size, stat.st_mtime_ns))
        if not refs:
            raise EngineError(
                f"unknown speaker {speaker!r}: {folder} holds no reference audio ({', '.join(AUDIO_SUFFIXES)})"
            )
        return refs


def decode_reference(path: Path, sample_rate: int, max_seconds: float) -> np.ndarray:
    """Decode a reference clip to float32 mono at `sample_rate`; EngineError if unreadable or too long."""
    import soundfile
    import soxr

    try:
        audio, source_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile raises its own error type for corrupt or unknown data
        raise EngineError(f"reference audio {path.name} cannot be decoded: {exc}") from exc
    seconds = audio.shape[0] / float(source_rate)
    if seconds < MIN_REFERENCE_S:
        raise EngineError(f"reference audio {path.name} is {seconds:.2f} s long; at least {MIN_REFERENCE_S} s needed")
    if seconds > max_seconds:
        raise EngineError(
            f"reference audio {path.name} is {seconds:.1f} s long; the limit is {max_seconds:g} s "
            f"(engine option max_reference_s)"
        )
    mono = audio.mean(axis=1, dtype=np.float32)
    if source_rate != sample_rate:
        mono = soxr.resample(mono, source_rate, sample_rate, quality="HQ").astype(np.float32, copy=False)
    return np.ascontiguousarray(mono)
