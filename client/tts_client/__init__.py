"""Thin clients for the tts-broker: TtsClient (blocking), AsyncTtsClient (asyncio), the seed API, `tts`."""

from __future__ import annotations

from typing import Any

from tts_protocol import __version__ as __version__  # the one version, in tts_protocol

from tts_client.aio import AsyncSynthesisStream, AsyncTtsClient
from tts_client.audio import save_line, save_result, write_pcm
from tts_client.client import JobHandle, PingReply, SynthesisStream, TtsClient
from tts_client.errors import (
    BatchFailed,
    BrokerUnavailable,
    ClientClosed,
    ClientTimeout,
    InvalidRequest,
    JobCancelled,
    JobFailed,
    JobTimeout,
    NotFound,
    QueueFull,
    RemoteError,
    TtsClientError,
    UnsafePath,
)
from tts_client.jobspec import JobOptions
from tts_client.results import AudioChunk, SynthesisResult
from tts_client.seed_api import (
    configure,
    create_message_chunks,
    generate_audio,
    get_worker_status,
    health_check,
    process_message_chunks,
    shutdown_worker_manager,
)
from tts_client.settings import ClientSettings


def build(*args: Any, **kwargs: Any) -> Any:
    """Build voice lines from a manifest (tts_studio.build; needs the extra: pip install 'tts-broker[build]')."""
    try:
        from tts_studio import build as run_build
    except ImportError as exc:
        raise ImportError(f"tts_client.build needs the build extra: pip install 'tts-broker[build]' ({exc})") from exc
    return run_build(*args, **kwargs)

__all__ = [
    "AsyncSynthesisStream",
    "AsyncTtsClient",
    "AudioChunk",
    "BatchFailed",
    "BrokerUnavailable",
    "ClientClosed",
    "ClientSettings",
    "ClientTimeout",
    "InvalidRequest",
    "JobCancelled",
    "JobFailed",
    "JobHandle",
    "JobOptions",
    "JobTimeout",
    "NotFound",
    "PingReply",
    "QueueFull",
    "RemoteError",
    "SynthesisResult",
    "SynthesisStream",
    "TtsClient",
    "TtsClientError",
    "UnsafePath",
    "build",
    "configure",
    "create_message_chunks",
    "generate_audio",
    "get_worker_status",
    "health_check",
    "process_message_chunks",
    "save_line",
    "save_result",
    "shutdown_worker_manager",
    "write_pcm",
]
