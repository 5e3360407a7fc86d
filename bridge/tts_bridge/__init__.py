"""Queue-system bridges: take TTS jobs from BullMQ, Redis Streams or RabbitMQ and hand the results back.

Each bridge is one client of the broker (tts_client.AsyncTtsClient): it turns a queue message (the shape of a
`tts batch` line) into a job whose id is stable across redeliveries, writes the audio atomically into an output
folder and answers the way its queue answers: a BullMQ return value, a result-stream entry, an RPC reply.
"""

from __future__ import annotations

from tts_bridge.errors import BridgeError, MalformedJob

__all__ = ["BridgeError", "MalformedJob"]
