"""tts-broker: the ZeroMQ broker daemon that queues TTS jobs and leases them to model-resident workers."""

from __future__ import annotations

__version__ = "0.1.0"
