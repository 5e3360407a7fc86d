"""Engine lookup by name: built-ins, plugins, lazy imports, clear errors, licences."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tts_worker.engines.base import EngineLoadError
from tts_worker.engines.registry import BUILTIN_ENGINES, create_engine, list_engines, resolve
from tts_worker.settings import WorkerSettings

pytestmark = pytest.mark.timeout(60)


@pytest.mark.unit
def test_builtin_names() -> None:
    assert resolve("tone").target == "tts_worker.engines.tone:ToneTestEngine"
    assert resolve("piper").target == "tts_worker.engines.piper:PiperEngine"
    assert resolve("fish-speech").target == "tts_worker.engines.fish_speech:FishSpeechEngine"


@pytest.mark.unit
def test_unknown_name_lists_known_ones() -> None:
    with pytest.raises(EngineLoadError) as info:
        resolve("espeak-deluxe")
    for name in BUILTIN_ENGINES:
        assert name in str(info.value)


@pytest.mark.unit
def test_create_engine_passes_options_and_settings() -> None:
    engine = create_engine("tone", {"latency_s": "0.25", "capacity": "2"}, WorkerSettings(engine="tone"))
    assert engine.load().capacity == 2
    with pytest.raises(EngineLoadError, match="unknown option"):
        create_engine("tone", {"nope": "1"}, WorkerSettings(engine="tone"))


@pytest.mark.unit
def test_listing_has_licences() -> None:
    rows = {row.name: row for row in list_engines()}
    assert rows["tone"].licence == "Apache-2.0"
    assert rows["piper"].licence.startswith("GPL-3.0-or-later")
    assert "fish-speech" in rows and rows["fish-speech"].licence


def test_choosing_an_engine_imports_only_that_one() -> None:
    code = (
        "import sys\n"
        "from tts_worker.engines.registry import create_engine, list_engines\n"
        "from tts_worker.settings import WorkerSettings\n"
        "list_engines()\n"
        "create_engine('tone', {}, WorkerSettings(engine='tone')).load()\n"
        "heavy = [m for m in ('piper', 'onnxruntime', 'torch', 'tts_worker.engines.piper',"
        " 'tts_worker.engines.fish_speech') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_cli_list_engines() -> None:
    done = subprocess.run([sys.executable, "-m", "tts_worker", "--list-engines"], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    assert "tone" in done.stdout and "piper" in done.stdout and "GPL-3.0-or-later" in done.stdout


def test_cli_unknown_engine_exits_at_once_with_the_names(dead_endpoint: str) -> None:
    done = subprocess.run([sys.executable, "-m", "tts_worker", "--engine", "nope", "--concurrency", "1",
                           "--broker", dead_endpoint], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "unknown engine 'nope'" in done.stderr and "piper" in done.stderr
