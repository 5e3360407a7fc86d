"""Recognise a Fish Speech checkpoint folder: which family it is and whether every file is there.

Only file names and config.json are read here (no torch), so a wrong folder is refused in milliseconds.

| family | marker | required beside it |
|---|---|---|
| 1.5 (fish-speech-1.5) | firefly-gan-vq-*.pth | config.json, model.pth, tokenizer.tiktoken |
| S1-mini (openaudio-s1-mini) | codec.pth | config.json, model.pth, tokenizer.tiktoken |
| S2 and Hugging Face layouts | model.safetensors, tokenizer.json | refused: not supported |
"""

from __future__ import annotations

import dataclasses
import enum
import json
from pathlib import Path
from typing import Any, Optional

from tts_worker.engines.base import EngineLoadError

CODEC_OVERRIDE_FILE = "codec_config.json"
REQUIRED_FILES = ("config.json", "model.pth", "tokenizer.tiktoken")
_S2_MARKERS = ("model.safetensors", "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json")


class Family(str, enum.Enum):
    """A checkpoint generation; 1.5 and S1 semantic tokens are not interchangeable."""

    V1_5 = "1.5"
    S1_MINI = "s1-mini"

    @property
    def display_name(self) -> str:
        return "Fish Speech 1.5" if self is Family.V1_5 else "OpenAudio S1-mini"

    @property
    def default_folder(self) -> str:
        return "fish-speech-1.5" if self is Family.V1_5 else "openaudio-s1-mini"


_VERSION_NAMES = {
    "1.5": Family.V1_5, "v1.5": Family.V1_5, "fish-speech-1.5": Family.V1_5,
    "s1": Family.S1_MINI, "s1-mini": Family.S1_MINI, "openaudio-s1-mini": Family.S1_MINI,
}


def parse_model_version(value: str) -> Optional[Family]:
    """MODEL_VERSION / model_version as a family; None for "auto". EngineLoadError for anything else."""
    text = value.strip().lower()
    if text == "auto":
        return None
    if text in _VERSION_NAMES:
        return _VERSION_NAMES[text]
    if text.startswith("s2") or text.startswith("openaudio-s2") or text.startswith("fish-audio-s2"):
        raise EngineLoadError(f"model_version {value!r}: S2 is not supported by this engine (use 1.5 or s1-mini)")
    raise EngineLoadError(f"model_version {value!r} is not known; use 1.5, s1-mini or auto")


@dataclasses.dataclass(frozen=True, slots=True)
class CheckpointLayout:
    """The files of one usable checkpoint folder."""

    folder: Path
    family: Family
    config: dict[str, Any]
    llm_weights: Path
    tokenizer: Path
    codec_weights: Path
    codec_override: Optional[Path]

    @property
    def name(self) -> str:
        return self.folder.name


def detect_layout(folder: Path, expected: Optional[Family]) -> CheckpointLayout:
    """Check `folder` and return its layout, or EngineLoadError naming the folder and what is wrong."""
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise EngineLoadError(
            f"Fish Speech checkpoint folder {folder} does not exist "
            f"(set --engine-opt checkpoint=PATH; see docs/fish-speech.md)"
        )
    if not folder.is_dir():
        raise EngineLoadError(f"Fish Speech checkpoint {folder} is not a folder")
    names = sorted(p.name for p in folder.iterdir())
    found = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "") if names else "nothing"

    s2 = [n for n in _S2_MARKERS if n in names]
    if s2 and "model.pth" not in names:
        raise EngineLoadError(
            f"checkpoint folder {folder} looks like a Fish Audio S2 / Hugging Face layout "
            f"(found {', '.join(s2)}): not supported; use fish-speech-1.5 or openaudio-s1-mini"
        )
    fireflies = [n for n in names if n.startswith("firefly-gan-vq-") and n.endswith(".pth")]
    has_codec = "codec.pth" in names
    if fireflies and has_codec:
        raise EngineLoadError(
            f"checkpoint folder {folder} holds both a 1.5 codec ({fireflies[0]}) and an S1 codec (codec.pth): "
            f"ambiguous, keep one family per folder"
        )
    if len(fireflies) > 1:
        raise EngineLoadError(f"checkpoint folder {folder} holds several Firefly codecs: {', '.join(fireflies)}")
    if fireflies:
        family, codec_name = Family.V1_5, fireflies[0]
    elif has_codec:
        family, codec_name = Family.S1_MINI, "codec.pth"
    else:
        raise EngineLoadError(
            f"checkpoint folder {folder} is not a Fish Speech checkpoint: no codec weights "
            f"(firefly-gan-vq-*.pth for 1.5, codec.pth for S1-mini); found: {found}"
        )
    missing = [n for n in REQUIRED_FILES if n not in names]
    if missing:
        raise EngineLoadError(
            f"checkpoint folder {folder} ({family.display_name}) is missing {', '.join(missing)}; found: {found}"
        )
    if expected is not None and expected is not family:
        raise EngineLoadError(
            f"checkpoint folder {folder} is a {family.display_name} checkpoint ({codec_name}) but model_version is "
            f"{expected.value}: set MODEL_VERSION={family.value} or --engine-opt model_version={family.value} "
            f"(or auto)"
        )
    for marker in ("int8", "int4"):
        if marker in str(folder):
            # Upstream switches on quantised loading whenever the path contains these letters.
            raise EngineLoadError(
                f"checkpoint path {folder} contains {marker!r}, which makes the Fish Speech loader treat it as "
                f"a quantised checkpoint; quantised checkpoints are not supported: rename the folder"
            )
    config = _read_config(folder / "config.json")
    override = folder / CODEC_OVERRIDE_FILE
    return CheckpointLayout(
        folder=folder,
        family=family,
        config=config,
        llm_weights=folder / "model.pth",
        tokenizer=folder / "tokenizer.tiktoken",
        codec_weights=folder / codec_name,
        codec_override=override if override.is_file() else None,
    )


def _read_config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EngineLoadError(f"{path} is not readable JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise EngineLoadError(f"{path} is not a JSON object")
    if data.get("model_type") != "dual_ar":
        raise EngineLoadError(
            f"{path}: model_type is {data.get('model_type')!r}, expected 'dual_ar' (Fish Speech 1.5 / S1-mini)"
        )
    return data
