"""`tts-worker --stdio`: one worker without a broker, for debugging an engine by hand (the seed's manual test).

Reads one JSON object per line on stdin and writes one JSON object per line on stdout:

    {"type":"load_model","model_version":"1.5"}
        -> {"type":"model_loaded","success":true,"engine":"piper","model":"...","sample_rate":22050,...}
    {"type":"generate","id":1,"text":"Test","output_path":"test.wav","voice_settings":{}}
        -> {"type":"result","id":1,"success":true,"output_path":"/abs/test.wav","duration_s":0.8,...}

`load_model` takes optional `model_version`, `device` and `options` (engine options, as --engine-opt);
`generate` loads the engine first if no `load_model` came (each seed example is a separate process), and takes
optional `speaker`. A line that is not JSON, an unknown type or a failed job answers
{"type":"error","success":false,"id":...,"code":...,"error":"..."} and the worker reads on. The WAV is written
to a temporary file beside `output_path` and renamed into place, so a reader never sees half a file. Logs go
to stderr; stdout carries only the answers (stray prints from an engine are sent to stderr too).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import threading
import time
import wave
from pathlib import Path
from typing import IO, Any, Mapping, Optional

from tts_protocol import ErrorCode
from tts_protocol.errors import one_line

from tts_worker.engines.base import NO_AUDIO_MESSAGE, EngineError, EngineLoadError, SynthesisRequest
from tts_worker.engines.registry import LoadedEngine, close_engine, load_engine
from tts_worker.exit_codes import ExitCode
from tts_worker.settings import WorkerSettings

log = logging.getLogger(__name__)

MAX_LINE_CHARS = 1_000_000


class StdioError(Exception):
    """A request this worker answers with an error line."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class StdioWorker:
    """The JSON-lines loop (see module docstring)."""

    def __init__(self, settings: WorkerSettings, options: Mapping[str, Any]) -> None:
        self.settings = settings
        self.options = dict(options)
        self.loaded: Optional[LoadedEngine] = None

    def run(self, stdin: IO[str], stdout: IO[str]) -> int:
        real_stdout = stdout
        sys.stdout = sys.stderr  # an engine's print() must not corrupt the answer stream
        try:
            for number, line in enumerate(stdin, 1):
                if not line.strip():
                    continue
                answer = self.handle_line(line, number)
                real_stdout.write(json.dumps(answer, ensure_ascii=False) + "\n")
                real_stdout.flush()
        finally:
            sys.stdout = sys.__stdout__
            if self.loaded is not None:
                close_engine(self.loaded.engine)
        return int(ExitCode.OK)

    def handle_line(self, line: str, number: int) -> dict[str, Any]:
        request_id: Any = None
        try:
            if len(line) > MAX_LINE_CHARS:
                raise StdioError("bad_request", f"line {number} is longer than {MAX_LINE_CHARS} characters")
            try:
                request = json.loads(line)
            except json.JSONDecodeError as exc:
                raise StdioError("bad_request", f"line {number} is not JSON: {exc}") from exc
            if not isinstance(request, dict):
                raise StdioError("bad_request", f"line {number} is not a JSON object")
            request_id = request.get("id")
            kind = request.get("type")
            if kind == "load_model":
                return self.load_model(request)
            if kind == "generate":
                return self.generate(request)
            raise StdioError("bad_request", f"unknown type {kind!r}; expected load_model or generate")
        except StdioError as exc:
            return _error(request_id, exc.code, str(exc))
        except EngineLoadError as exc:
            return _error(request_id, "load_failed", str(exc))
        except EngineError as exc:
            return _error(request_id, exc.code.value, str(exc))
        except Exception as exc:  # a debug tool reports anything and reads on
            log.exception("line %d failed", number)
            return _error(request_id, ErrorCode.INTERNAL.value, f"{type(exc).__name__}: {exc}")

    def load_model(self, request: Mapping[str, Any]) -> dict[str, Any]:
        updates: dict[str, Any] = {}
        for key in ("model_version", "device"):
            value = request.get(key)
            if value is not None:
                if not isinstance(value, str):
                    raise StdioError("bad_request", f"{key} must be a string")
                updates[key] = value
        options = request.get("options", {})
        if not isinstance(options, dict):
            raise StdioError("bad_request", "options must be an object")
        settings = self.settings
        if updates:
            try:
                settings = WorkerSettings.model_validate({**self.settings.model_dump(), **updates})
            except ValueError as exc:
                raise StdioError("bad_request", one_line(exc)) from exc
        merged = {**self.options, **options}
        # Like a RELOAD in the daemon (engine_host.reload): load the new engine first and swap it in only once
        # it works, so a bad load_model answers load_failed and leaves the working engine and its options.
        loaded = load_engine(settings.engine, merged, settings)
        old, self.loaded = self.loaded, loaded
        self.settings, self.options = settings, merged
        if old is not None:
            close_engine(old.engine)
        log.info("engine %s loaded in %d ms (model %s)", loaded.info.engine, loaded.load_time_ms, loaded.info.model)
        info = loaded.info
        return {"type": "model_loaded", "success": True, "engine": info.engine, "model": info.model,
                "device": info.device, "sample_rate": info.sample_rate, "model_version": self.settings.model_version,
                "load_time_ms": loaded.load_time_ms}

    def generate(self, request: Mapping[str, Any]) -> dict[str, Any]:
        text = request.get("text")
        output_path = request.get("output_path")
        voice = request.get("voice_settings", {})
        speaker = request.get("speaker")
        if not isinstance(text, str) or not text.strip():
            raise StdioError("bad_request", "text must be a non-empty string")
        if not isinstance(output_path, str) or not output_path:
            raise StdioError("bad_request", "output_path must be a file path")
        if not isinstance(voice, dict):
            raise StdioError("bad_request", "voice_settings must be an object")
        if speaker is not None and not isinstance(speaker, str):
            raise StdioError("bad_request", "speaker must be a string")
        path = Path(output_path).expanduser().resolve()
        _check_writable(path)  # before synthesis: an unwritable target costs no engine time
        loaded = self._engine()
        started = time.monotonic()
        job_id = f"stdio-{request.get('id', 0)}"[:128]
        chunks = list(loaded.engine.synthesize(
            SynthesisRequest(job_id=job_id, text=text, speaker=speaker, voice=voice), threading.Event()))
        gen_ms = int((time.monotonic() - started) * 1000)
        if not any(chunk.samples.size for chunk in chunks):
            raise StdioError(ErrorCode.NO_AUDIO.value, NO_AUDIO_MESSAGE)
        rate = chunks[0].sample_rate
        channels = 1 if chunks[0].samples.ndim == 1 else int(chunks[0].samples.shape[1])
        pcm = b"".join(chunk.to_bytes() for chunk in chunks)
        try:
            write_wav_atomically(path, pcm, rate, channels)
        except OSError as exc:  # e.g. the folder went read-only meanwhile: the caller's path, not our bug
            raise StdioError("bad_request", f"cannot write output_path {str(path)!r}: {exc.strerror or exc}") from exc
        samples = len(pcm) // (2 * channels)
        return {"type": "result", "id": request.get("id"), "success": True, "output_path": str(path),
                "duration_s": round(samples / rate, 3), "sample_rate": rate, "channels": channels,
                "gen_time_ms": gen_ms, "engine": loaded.info.engine, "model": loaded.info.model}

    def _engine(self) -> LoadedEngine:
        if self.loaded is None:
            self.loaded = load_engine(self.settings.engine, self.options, self.settings)
            log.info("engine %s loaded in %d ms (model %s)", self.loaded.info.engine, self.loaded.load_time_ms,
                     self.loaded.info.model)
        return self.loaded


def write_wav_atomically(path: Path, pcm: bytes, sample_rate: int, channels: int) -> None:
    """16-bit PCM WAV at `path`: written to a temporary file in the same folder, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; give the file the mode a plain open() would
        with os.fdopen(fd, "wb") as raw:
            with wave.open(raw, "wb") as wav:
                wav.setnchannels(channels)
                wav.setsampwidth(2)
                wav.setframerate(sample_rate)
                wav.writeframes(pcm)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _check_writable(path: Path) -> None:
    """Refuse (bad_request) an output_path whose folder cannot be made or written, or that names a folder."""
    try:
        if path.is_dir():
            raise StdioError("bad_request", f"output_path {str(path)!r} is a folder; give a file path")
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent, prefix=".tts-write-check-"):
            pass
    except OSError as exc:
        raise StdioError("bad_request", f"cannot write output_path {str(path)!r}: {exc.strerror or exc}") from exc


def _error(request_id: Any, code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "id": request_id, "success": False, "code": code, "error": message[:4096]}
