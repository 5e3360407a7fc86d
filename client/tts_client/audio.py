"""Write synthesised PCM to audio files: atomically, and never outside the chosen folder."""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Union

from tts_protocol import output_filename

from tts_client.errors import InvalidRequest, OutputNotWritable, UnsafePath
from tts_client.results import SynthesisResult

if TYPE_CHECKING:
    import numpy as np

PathLike = Union[str, "os.PathLike[str]"]

# soundfile (libsndfile) format and subtype for each output format we offer.
FORMATS: dict[str, tuple[str, str]] = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
}


def check_format(fmt: str) -> str:
    """The normalised format name; raises InvalidRequest for one we cannot write."""
    name = fmt.lower().lstrip(".")
    if name not in FORMATS:
        raise InvalidRequest(f"unknown audio format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return name


def format_for_path(path: PathLike, default: str = "wav") -> str:
    """The format a file name's extension asks for (the default when it has none)."""
    suffix = Path(path).suffix
    return check_format(suffix) if suffix else check_format(default)


def output_format(path: PathLike, fmt: str | None, default: str = "wav") -> str:
    """The format to write `path` in: the extension's; `fmt` (else `default`) for a name without one.

    A `fmt` that contradicts the extension (`--format wav -o x.mp3`) is refused with InvalidRequest rather than
    writing one format under another's name; so is an extension that is no audio format we write.
    """
    suffix = Path(path).suffix
    if not suffix:
        return check_format(fmt or default)
    try:
        by_name = check_format(suffix)
    except InvalidRequest:
        raise InvalidRequest(f"{Path(path).name}: {suffix!r} is not an audio format we write; use one of "
                             f"{', '.join('.' + f for f in FORMATS)}") from None
    if fmt is not None and check_format(fmt) != by_name:
        raise InvalidRequest(f"format {check_format(fmt)} conflicts with the file name {Path(path).name} "
                             f"({by_name}); drop the format or change the extension")
    return by_name


def safe_output_path(output_dir: PathLike, filename: str) -> Path:
    """output_dir/filename, refused (UnsafePath) if it would resolve anywhere but directly inside output_dir.

    Resolving follows symlinks, so a planted link pointing elsewhere is refused too.
    """
    root = Path(output_dir).resolve()
    candidate = (root / filename).resolve()
    if candidate.parent != root or candidate.name in ("", ".", ".."):
        raise UnsafePath(f"{filename!r} would be written outside {str(root)!r}")
    return candidate


def check_writable_dir(folder: PathLike) -> Path:
    """Create `folder` if needed and prove a file can be written in it; raises OutputNotWritable.

    Called before a job is submitted, so a read-only or misspelt folder costs no synthesis.
    """
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path, prefix=".tts-write-check-"):
            pass
    except OSError as exc:
        raise OutputNotWritable(f"cannot write to the output folder {str(path)!r}: {exc.strerror or exc}") from exc
    return path


def line_output_path(output_dir: PathLike, stream_index: object, line_id: object, fmt: str) -> Path:
    """Where generate_audio writes a line: `{stream_index}_{id}.{ext}` inside output_dir (PROTOCOL.md 7)."""
    return safe_output_path(output_dir, output_filename(stream_index, line_id, check_format(fmt)))


def pcm_frames(pcm: bytes, channels: int = 1) -> "np.ndarray":
    """s16le PCM as int16 samples shaped (frames, channels); a trailing partial frame is dropped."""
    import numpy as np

    samples = np.frombuffer(pcm, dtype="<i2")
    return samples[: len(samples) - len(samples) % channels].reshape(-1, channels)


def encode_pcm(pcm: bytes, sample_rate: int, channels: int = 1, *, container: str, subtype: str) -> bytes:
    """s16le PCM encoded in memory by soundfile (libsndfile): e.g. ("WAV", "PCM_16"), ("OGG", "OPUS")."""
    import io

    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, pcm_frames(pcm, channels), sample_rate, format=container, subtype=subtype)
    return buffer.getvalue()


def write_pcm(path: PathLike, pcm: bytes, sample_rate: int, channels: int = 1, fmt: str | None = None) -> Path:
    """Encode s16le PCM into `path` atomically: a temporary file in the same folder, then os.replace.

    Readers never see a half-written file, and a failed write leaves nothing behind. The folder is created
    if missing. `fmt` defaults to the file's extension.
    """
    import soundfile

    target = Path(path)
    name = output_format(target, fmt)
    container, subtype = FORMATS[name]
    target.parent.mkdir(parents=True, exist_ok=True)
    samples = pcm_frames(pcm, channels)
    tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
    try:
        with open(tmp, "xb") as handle:
            soundfile.write(handle, samples, sample_rate, format=container, subtype=subtype)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def save_result(result: SynthesisResult, path: PathLike, fmt: str | None = None) -> Path:
    """Write a job's audio to `path` (atomic; format from `fmt` or the extension)."""
    return write_pcm(path, result.pcm, result.sample_rate, result.channels, fmt)


def save_line(result: SynthesisResult, output_dir: PathLike, stream_index: object, line_id: object,
              fmt: str = "wav") -> Path:
    """Write a job's audio as `{stream_index}_{id}.{fmt}` inside output_dir; returns the path."""
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    return write_pcm(line_output_path(output_dir, stream_index, line_id, fmt), result.pcm, result.sample_rate,
                     result.channels, fmt)
