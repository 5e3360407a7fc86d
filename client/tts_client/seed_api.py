"""The seed system's audioGenerator API, in Python, on top of a default TtsClient.

    generate_audio("Hello, world!", "default", 1, 1, "output")       -> "output/1_1.wav"
    process_message_chunks(create_message_chunks(messages, 10), "output")
    health_check(); get_worker_status(); shutdown_worker_manager()

The default client is built on first use from the environment (TTS_BROKER_URL, TTS_CLIENT_*); configure()
replaces it. Unlike the seed, no worker processes live inside the caller: shutdown_worker_manager() only
closes this process's connection, the broker and its workers keep running.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any, Mapping, Optional, Sequence, TypeVar

from tts_protocol import safe_name_part

from tts_client.audio import check_format, check_writable_dir, line_output_path, save_line
from tts_client.client import JobHandle, TtsClient
from tts_client.errors import BatchFailed, InvalidRequest
from tts_client.jobspec import new_job_id
from tts_client.settings import ClientSettings

log = logging.getLogger(__name__)

T = TypeVar("T")
Message = Mapping[str, Any]


class _DefaultClient:
    """Holds the seed API's client; built lazily, replaced by configure(), closed by shutdown."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._client: Optional[TtsClient] = None
        self._settings: Optional[ClientSettings] = None

    def get(self) -> TtsClient:
        with self._lock:
            if self._client is None or self._client.closed:
                self._client = TtsClient(settings=self._settings or ClientSettings())
            return self._client

    def replace(self, settings: ClientSettings) -> TtsClient:
        with self._lock:
            old, self._client, self._settings = self._client, TtsClient(settings=settings), settings
        if old is not None:
            old.close()
        return self._client

    def close(self) -> None:
        with self._lock:
            old, self._client = self._client, None
        if old is not None:
            old.close()


_default = _DefaultClient()


def configure(url: Optional[str] = None, *, settings: Optional[ClientSettings] = None, **overrides: Any) -> TtsClient:
    """Set the client the seed API uses, e.g. configure(url="tcp://tts-host:5555", timeout_s=60)."""
    base = settings if settings is not None else ClientSettings()
    updates = {**overrides, **({"broker_url": url} if url is not None else {})}
    return _default.replace(ClientSettings.model_validate({**base.model_dump(), **updates}))


def default_client() -> TtsClient:
    """The client behind the seed API (built from the environment on first use)."""
    return _default.get()


def line_job_id(stream_index: object, line_id: object) -> str:
    """`line-{stream_index}-{id}-{random hex}` (PROTOCOL.md 7), parts shortened to fit the 128-char limit."""
    return new_job_id(f"line-{safe_name_part(stream_index)[:32]}-{safe_name_part(line_id)}")


def generate_audio(text: str, speaker: Optional[str], id: object, stream_index: object,  # noqa: A002 (seed name)
                   output_dir: str = "output", *, fmt: Optional[str] = None, model: Optional[str] = None,
                   voice: Optional[Mapping[str, Any]] = None, timeout_s: Optional[float] = None) -> str:
    """Synthesise one line into `{output_dir}/{stream_index}_{id}.{fmt}` and return that path."""
    client = default_client()
    fmt = check_format(fmt or client.settings.output_format)
    line_output_path(output_dir, stream_index, id, fmt)  # refuse a bad target before spending synthesis on it
    check_writable_dir(output_dir)
    result = client.synthesize(text, speaker=speaker, model=model, voice=voice, timeout_s=timeout_s,
                               job_id=line_job_id(stream_index, id))
    return str(save_line(result, output_dir, stream_index, id, fmt))


def create_message_chunks(messages: Sequence[T], size: int) -> list[list[T]]:
    """Split messages into consecutive chunks of at most `size`."""
    if size < 1:
        raise InvalidRequest("chunk size must be at least 1")
    return [list(messages[i:i + size]) for i in range(0, len(messages), size)]


def _message_fields(message: Message) -> tuple[str, Optional[str], object, object, Mapping[str, Any]]:
    try:
        text = message["text"]
        line_id = message["id"]
    except (KeyError, TypeError) as exc:
        raise InvalidRequest(f"a message needs 'text' and 'id': {exc}") from exc
    stream_index = message.get("stream_index", message.get("streamIndex", 0))
    voice = message.get("voice") or message.get("voice_settings") or {}
    return text, message.get("speaker"), line_id, stream_index, voice


def process_message_chunks(chunks: Sequence[Sequence[Message]], output_dir: str = "output", *,
                           fmt: Optional[str] = None, model: Optional[str] = None, on_error: str = "raise",
                           timeout_s: Optional[float] = None) -> list[str]:
    """Synthesise every message ({"text", "speaker", "id"[, "stream_index"]}), one chunk at a time, each chunk
    submitted at once; returns the written paths in message order.

    A message's file is `{stream_index}_{id}.{fmt}` (stream_index defaults to 0). If any job fails, the other
    files are still written; then on_error="raise" raises BatchFailed (with .paths and .failures) and
    on_error="skip" returns the paths that were written.
    """
    if on_error not in ("raise", "skip"):
        raise InvalidRequest("on_error must be 'raise' or 'skip'")
    client = default_client()
    fmt = check_format(fmt or client.settings.output_format)
    _check_targets(chunks, output_dir, fmt)
    paths: list[str] = []
    failures: list[tuple[object, BaseException]] = []
    for chunk in chunks:
        written: dict[int, str] = {}
        pending: dict[Future, tuple[int, JobHandle, object, object]] = {}
        for index, message in enumerate(chunk):
            text, speaker, line_id, stream_index, voice = _message_fields(message)
            handle = client.submit(text, speaker=speaker, model=model, voice=voice, timeout_s=timeout_s,
                                   job_id=line_job_id(stream_index, line_id))
            pending[handle.future] = (index, handle, stream_index, line_id)
        while pending:
            done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for future in done:
                index, handle, stream_index, line_id = pending.pop(future)
                try:
                    written[index] = str(save_line(handle.result(), output_dir, stream_index, line_id, fmt))
                except Exception as exc:
                    log.warning("job %s (line %s) failed: %s", handle.job_id, line_id, exc)
                    failures.append((line_id, exc))
        paths.extend(written[i] for i in sorted(written))
    if failures and on_error == "raise":
        raise BatchFailed(f"{len(failures)} of {len(paths) + len(failures)} lines failed", paths=paths,
                          failures=failures)
    return paths


def _check_targets(chunks: Sequence[Sequence[Message]], output_dir: str, fmt: str) -> None:
    """Refuse, before any synthesis, messages that lack fields or empty text, file names that collide
    (`a/b` and `a_b` both become `0_a_b.wav`), and an output folder that cannot be written."""
    owners: dict[str, object] = {}
    for chunk in chunks:
        for message in chunk:
            text, _speaker, line_id, stream_index, _voice = _message_fields(message)
            if not isinstance(text, str) or not text.strip():
                raise InvalidRequest(f"bad_request: message id {line_id!r} has empty or whitespace-only text")
            name = line_output_path(output_dir, stream_index, line_id, fmt).name
            if name in owners:
                raise InvalidRequest(f"messages id {owners[name]!r} and id {line_id!r} (stream {stream_index!r}) "
                                     f"would both be written to {name!r}; give them distinct ids")
            owners[name] = line_id
    if owners:
        check_writable_dir(output_dir)


def health_check(timeout_s: float = 2.0) -> bool:
    """True if the broker answers and at least one worker is connected."""
    try:
        status = default_client().broker_status(timeout_s=timeout_s)
    except Exception as exc:
        log.debug("health check failed: %s", exc)
        return False
    return status.serving(None) > 0


def get_worker_status() -> dict[str, Any]:
    """The broker's status view as a dict: queue, job counters and `workers` (one entry per worker)."""
    return default_client().broker_status().to_wire()


def shutdown_worker_manager() -> None:
    """Close the default client (the broker and its workers keep running). Idempotent."""
    _default.close()
