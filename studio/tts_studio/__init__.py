"""`tts build`: voice lines from a manifest, incremental, loudness-conformed, timed and checked (extra `build`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from tts_client.client import TtsClient
from tts_client.settings import ClientSettings
from tts_studio.builder import LOUDNESS_PRESETS, Builder, BuildOptions
from tts_studio.errors import BuildError, BuildSetupError, ManifestError, ManifestProblem
from tts_studio.extra import EXTRA_HINT
from tts_studio.process import ProcessSettings
from tts_studio.report import BuildReport

__all__ = ["EXTRA_HINT", "LOUDNESS_PRESETS", "BuildError", "BuildOptions", "BuildReport", "BuildSetupError", "Builder",
           "ManifestError", "ManifestProblem", "ProcessSettings", "build"]


def build(manifest: str | Path, output_dir: str | Path, *, client: Optional[TtsClient] = None,
          broker: Optional[str] = None, options: Optional[BuildOptions] = None,
          on_progress: Optional[Callable[[int, int], None]] = None, **process: Any) -> BuildReport:
    """Build every line of `manifest` into `output_dir`; returns the report (its exit_code: 0 ok, 1 failed lines).

    Give a connected `client`, or `broker` (a URL; default: TTS_BROKER_URL). Keyword arguments that name a
    ProcessSettings field (lufs=, true_peak_db=, pad_ms=, fmt=, max_wer=...) override `options.process`.
    Raises ManifestError (every problem with its line number) before anything is synthesised.
    """
    import dataclasses

    opts = options or BuildOptions()
    if process:
        opts = dataclasses.replace(opts, process=dataclasses.replace(opts.process, **process))
    own = client is None
    if client is None:
        client = TtsClient(settings=ClientSettings(broker_url=broker) if broker else ClientSettings())
    try:
        return Builder(client, manifest, output_dir, opts, on_progress=on_progress).run()
    finally:
        if own:
            client.close()
