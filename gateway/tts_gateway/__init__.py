"""An OpenAI-compatible HTTP gateway in front of the broker: `tts gateway` (needs the `gateway` extra).

Only this package imports FastAPI and uvicorn; it talks to the broker through AsyncTtsClient like any client.
"""

from __future__ import annotations

from tts_gateway.settings import GatewaySettings

__all__ = ["GatewaySettings"]
