"""Fixtures and helpers for the Fish Speech tests (run in .venv-fish by scripts/test-fish.sh).

Test modules import what they use (`from fishkit import ...`). The tiny checkpoints are random models in the
real 1.5 and S1-mini layouts, made by scripts/make_tiny_fish_checkpoints.py (cached under .cache/fish-tiny).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {"1.5": "fish-speech-1.5", "s1-mini": "openaudio-s1-mini"}
FAMILIES = list(FOLDERS)
SAMPLES_PER_FRAME = 2048  # both codecs: 44.1 kHz at ~21.5 frames/s
FAST = {"max_new_tokens": 12}  # tiny random models rarely stop by themselves: keep jobs short


def fish_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("torch", "fish_speech", "fish_speech_lib"))


SKIP_REASON = "Fish Speech is not installed here: run scripts/test-fish.sh (it uses .venv-fish)"


@pytest.fixture(scope="session")
def tiny_dir() -> Path:
    """The tiny checkpoints folder, made (or found up to date) by the real maker script."""
    out = Path(os.environ.get("TTS_FISH_TINY_DIR") or ROOT / ".cache" / "fish-tiny")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_tiny_fish_checkpoints.py"), "--out", str(out)],
                   check=True, cwd=str(ROOT), timeout=300)
    return out


def checkpoint(tiny_dir: Path, family: str) -> Path:
    return tiny_dir / FOLDERS[family]


def copy_checkpoint(tiny_dir: Path, family: str, dest: Path) -> Path:
    """A private copy of a tiny checkpoint (to break on purpose)."""
    target = dest / FOLDERS[family]
    shutil.copytree(checkpoint(tiny_dir, family), target)
    return target


def tone(seconds: float, rate: int, freq: float, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.1 * np.sin(2 * np.pi * 3 * freq * t)
    wave = wave.astype(np.float32)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def write_voices(root: Path) -> Path:
    """alice: one wav at 22.05 kHz; bob: flac (stereo 48 kHz) + ogg pair; carol: one flac at 44.1 kHz."""
    import soundfile

    (root / "alice").mkdir(parents=True)
    soundfile.write(root / "alice" / "reference.wav", tone(1.5, 22050, 220), 22050)
    (root / "alice" / "reference.txt").write_text("Hello there, I am Alice.", encoding="utf-8")
    (root / "bob").mkdir()
    soundfile.write(root / "bob" / "calm.flac", tone(1.0, 48000, 150, channels=2), 48000)
    (root / "bob" / "calm.txt").write_text("I speak calmly.", encoding="utf-8")
    soundfile.write(root / "bob" / "loud.ogg", tone(1.2, 24000, 180), 24000, format="OGG", subtype="VORBIS")
    (root / "bob" / "loud.txt").write_text("And sometimes loudly!", encoding="utf-8")
    (root / "carol").mkdir()
    soundfile.write(root / "carol" / "reference.flac", tone(0.8, 44100, 300), 44100)
    (root / "carol" / "reference.txt").write_text("Carol here.", encoding="utf-8")
    return root


@pytest.fixture
def voices(tmp_path: Path) -> Path:
    return write_voices(tmp_path / "voices")


@pytest.fixture
def make_engine(tiny_dir: Path, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """make_engine(family, load=True, **options) -> FishSpeechEngine; every engine is closed at teardown."""
    from tts_worker.engines.fish_speech import FishSpeechEngine

    made: list[Any] = []

    def make(family: str, load: bool = True, **options: Any) -> Any:
        opts = {"checkpoint": str(checkpoint(tiny_dir, family)), "model_version": family,
                "token_cache_dir": str(tmp_path / "token-cache"), "voices_dir": str(tmp_path / "voices"),
                **{k: str(v) for k, v in options.items()}}
        engine = FishSpeechEngine(options=opts, settings=None)
        made.append(engine)
        if load:
            engine.load()
        return engine

    yield make
    for engine in made:
        engine.close()
    leaked = [t for t in threading.enumerate() if t.name.startswith("fish-") and t.is_alive()]
    assert not leaked, f"inference threads left running: {leaked}"


def run(engine: Any, text: str, speaker: Optional[str] = None, voice: Optional[dict[str, Any]] = None,
        cancel: Optional[threading.Event] = None, job_id: str = "t-1") -> list[np.ndarray]:
    """Synthesize and return the int16 chunks."""
    from tts_worker.engines.base import SynthesisRequest

    request = SynthesisRequest(job_id=job_id, text=text, speaker=speaker, voice={**FAST, **(voice or {})})
    return [chunk.samples for chunk in engine.synthesize(request, cancel or threading.Event())]
