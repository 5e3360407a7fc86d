"""Attack (issue 19, item 18): two unsafe `--id`s of `tts say` shared one file name, the second replacing the first.

Made-safe names that had to change carry a digest of the original (PROTOCOL.md section 7), so `a/b` and `a?b`
land in two files, each with its own audio.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile

from harness import ROOT, BrokerProc, tone_frames

pytestmark = pytest.mark.timeout(120)


def say(broker: BrokerProc, text: str, line_id: str, out: Path) -> Path:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TTS_")}
    run = subprocess.run([sys.executable, "-m", "tts_client", "--broker", broker.frontend, "say", text,
                          "--output-dir", str(out), "--id", line_id], capture_output=True, text=True, timeout=60,
                         cwd=str(ROOT), env={**env, "NO_COLOR": "1"})
    assert run.returncode == 0, run.stderr
    return Path(run.stdout.strip())


def test_two_unsafe_ids_get_two_files(broker: BrokerProc, tone_workers, tmp_path: Path) -> None:
    tone_workers(broker)
    out = tmp_path / "out"
    first = say(broker, "One short line.", "a/b", out)
    second = say(broker, "A second and much longer line. With two sentences.", "a?b", out)
    assert first != second and first.parent == second.parent == out.resolve()
    assert first.name.startswith("0_a_b-") and second.name.startswith("0_a_b-")
    assert soundfile.info(str(first)).frames == tone_frames("One short line.")
    assert soundfile.info(str(second)).frames == tone_frames("A second and much longer line. With two sentences.")
    assert say(broker, "Plain.", "plain-id", out).name == "0_plain-id.wav"  # safe ids keep their names
