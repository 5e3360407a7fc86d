"""Fish Speech engine (1.5 and OpenAudio S1-mini). Needs the `fish` extra: see docs/fish-speech.md.

Importing this package imports no torch; load() does.
"""

from tts_worker.engines.fish_speech.engine import FishSpeechEngine

__all__ = ["FishSpeechEngine"]
