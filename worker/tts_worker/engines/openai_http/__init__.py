"""The `openai-http` engine: any OpenAI-compatible speech server behind the broker (engine.py)."""

from tts_worker.engines.openai_http.engine import OpenAIHttpEngine

__all__ = ["OpenAIHttpEngine"]
