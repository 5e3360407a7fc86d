"""tts-broker: the ZeroMQ broker daemon that queues TTS jobs and leases them to model-resident workers."""

from __future__ import annotations

from tts_protocol import __version__ as __version__  # the one version, in tts_protocol
