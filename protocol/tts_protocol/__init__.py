"""TTSP/2: the wire contract shared by the tts-broker broker, workers and clients.

See protocol/PROTOCOL.md for the specification this package implements.
"""

from __future__ import annotations

# The project's one version: pyproject.toml reads it, tts_broker, tts_worker and tts_client re-export it.
__version__ = "0.1.0"

from tts_protocol.codec import Message, as_body, body_for, decode, encode
from tts_protocol.constants import (
    CLIENT_HEADER,
    DEFAULT_BACKEND,
    DEFAULT_FRONTEND,
    PROTOCOL_VERSION,
    WORKER_HEADER,
    Command,
    Priority,
    Side,
)
from tts_protocol.errors import ErrorCode, ProtocolError, TtsError
from tts_protocol.naming import output_filename, safe_name_part

__all__ = [
    "__version__",
    "CLIENT_HEADER",
    "DEFAULT_BACKEND",
    "DEFAULT_FRONTEND",
    "PROTOCOL_VERSION",
    "WORKER_HEADER",
    "Command",
    "ErrorCode",
    "Message",
    "as_body",
    "body_for",
    "Priority",
    "ProtocolError",
    "Side",
    "TtsError",
    "decode",
    "encode",
    "output_filename",
    "safe_name_part",
]
