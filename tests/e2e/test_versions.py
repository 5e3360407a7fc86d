"""`--version` on every command the distribution installs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tts_protocol import __version__

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(("module", "name"), [("tts_broker", "tts-broker"), ("tts_worker", "tts-worker"),
                                              ("tts_client", "tts")])
def test_version_flag(module: str, name: str) -> None:
    proc = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True, timeout=50)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{name}, version {__version__}"
