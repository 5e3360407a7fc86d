"""The gateway's request and response bodies, as they appear in its OpenAPI schema."""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, create_model

from tts_gateway.encoding import RESPONSE_FORMATS
from tts_gateway.settings import GatewaySettings


class VoiceRef(BaseModel):
    """A voice given as an object, as OpenAI's custom voices are: `{"id": "..."}`."""

    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1, max_length=256)


class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "tts-broker"
    routing_key: Optional[str] = Field(description="The broker routing key it maps to (null: broker default).")
    workers: int = Field(description="Connected workers serving it now.")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]


class VoiceObject(BaseModel):
    id: str
    object: Literal["voice"] = "voice"
    speaker: str = Field(description="The engine speaker name it is sent as.")
    source: Literal["configured", "warm"] = Field(
        description="configured: from TTS_GATEWAY_VOICES; warm: a speaker some worker holds ready.")
    models: list[str] = Field(description="Models it can be used with.")


class VoiceList(BaseModel):
    object: Literal["list"] = "list"
    data: list[VoiceObject]


class Health(BaseModel):
    status: Literal["ok", "no_workers", "broker_unavailable"]
    broker_id: Optional[str] = None
    workers: int = 0
    models: dict[str, int] = Field(default_factory=dict, description="Workers serving each model.")


def speech_request_model(settings: GatewaySettings) -> type[BaseModel]:
    """The request body, with this gateway's models and input limit in its schema."""
    models = sorted(settings.models) or ["none"]
    formats = tuple(RESPONSE_FORMATS)
    example: Any = {"model": models[0], "input": "Hello from the gateway.", "voice": "alloy",
                    "response_format": "wav"}
    fields: dict[str, Any] = {
        "model": (Literal[tuple(models)], Field(description="A configured model name (see GET /v1/models).")),
        "input": (str, Field(min_length=1, max_length=settings.max_input_chars, pattern=r"\S",
                             description="Text to speak; not empty or only white space.")),
        "voice": (Union[str, VoiceRef], Field(description='A voice name (GET /v1/audio/voices) or {"id": name}.')),
        "response_format": (Literal[formats], Field(default="mp3", description="aac is not available.")),
        "speed": (float, Field(default=1.0, ge=0.25, le=4.0,
                               description="1.0 keeps the worker's pace; otherwise length_scale = 1/speed.")),
        "stream_format": (Literal["audio", "sse"], Field(
            default="audio", description="audio: the bytes; sse: speech.audio.delta events (base64).")),
        "instructions": (Optional[str], Field(default=None, max_length=4096,
                                              description="Accepted for compatibility; ignored.")),
    }
    model: type[BaseModel] = create_model(
        "SpeechRequest", __config__=ConfigDict(extra="ignore", json_schema_extra={"examples": [example]}), **fields)
    return model
