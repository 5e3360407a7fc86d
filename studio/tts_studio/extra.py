"""The build extra's modules must be importable: importing tts_studio without them says what to install."""

from __future__ import annotations

EXTRA_HINT = "pip install 'tts-broker[build]'"

try:
    import pocketsphinx  # noqa: F401
    import pyloudnorm  # noqa: F401
    import scipy.signal  # noqa: F401
except ImportError as exc:
    raise ImportError(f"tts build needs the build extra ({exc.name} is missing): {EXTRA_HINT}") from exc
