"""Codec files as upstream releases them load; anything beyond those known extras is refused, naming the keys.

The tiny checkpoints' codec files are written the way the real ones are (scripts/make_tiny_fish_checkpoints.py,
`as_real_codec_file`): this checks that they really carry those extras, that they load, and that a key the
model does not know, or a weight the file lacks, still stops the worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fishkit import FOLDERS, SKIP_REASON, copy_checkpoint, fish_available, tiny_dir

pytestmark = [pytest.mark.skipif(not fish_available(), reason=SKIP_REASON), pytest.mark.timeout(120)]
_ = tiny_dir

from tts_worker.engines.base import EngineLoadError  # noqa: E402
from tts_worker.engines.fish_speech import FishSpeechEngine  # noqa: E402

CODEC_FILE = {"1.5": "firefly-gan-vq-fsq-8x1024-21hz-generator.pth", "s1-mini": "codec.pth"}


def load(folder: Path) -> None:
    engine = FishSpeechEngine(options={"checkpoint": str(folder), "model_version": "auto", "token_cache": "false"})
    try:
        engine.load()
    finally:
        engine.close()


def read(path: Path) -> Any:
    import torch

    return torch.load(path, weights_only=True)


def flat(data: Any) -> dict[str, Any]:
    return data["state_dict"] if "state_dict" in data else data


@pytest.mark.parametrize("family", list(FOLDERS))
def test_the_tiny_codec_files_carry_upstreams_extras_and_load(tiny_dir: Path, tmp_path: Path, family: str) -> None:
    folder = copy_checkpoint(tiny_dir, family, tmp_path)
    data = read(folder / CODEC_FILE[family])
    keys = list(flat(data))
    new_style = [k for k in keys if ".parametrizations.weight.original" in k]
    old_style = [k for k in keys if k.endswith((".weight_g", ".weight_v"))]
    if family == "1.5":
        assert "state_dict" in data and all(k.startswith(("generator.", "discriminator.")) for k in keys)
        assert any(k.startswith("discriminator.") for k in keys)
        assert old_style and not new_style  # the installed Firefly builds the new spelling
    else:
        assert old_style and all(k.startswith("quantizer.") for k in old_style)
        assert new_style and not any(k.startswith("quantizer.") for k in new_style)
        assert any(k.endswith(".freqs_cis") for k in keys) and any(k.endswith(".causal_mask") for k in keys)
    load(folder)


@pytest.mark.parametrize("family", list(FOLDERS))
def test_an_unknown_key_is_refused_by_name(tiny_dir: Path, tmp_path: Path, family: str) -> None:
    import torch

    folder = copy_checkpoint(tiny_dir, family, tmp_path)
    path = folder / CODEC_FILE[family]
    data = read(path)
    prefix = "generator." if family == "1.5" else ""
    flat(data)[f"{prefix}decoder.not_a_layer.weight"] = torch.zeros(3)
    torch.save(data, path)
    with pytest.raises(EngineLoadError, match=r"1 unexpected key\(s\): decoder.not_a_layer.weight"):
        load(folder)


@pytest.mark.parametrize("family", list(FOLDERS))
def test_a_missing_weight_is_refused_by_name(tiny_dir: Path, tmp_path: Path, family: str) -> None:
    import torch

    folder = copy_checkpoint(tiny_dir, family, tmp_path)
    path = folder / CODEC_FILE[family]
    data = read(path)
    weights = flat(data)
    victim = next(k for k in weights if k.endswith((".weight_v", ".original1")))
    del weights[victim]
    torch.save(data, path)
    with pytest.raises(EngineLoadError, match=r"1 missing key\(s\): \S*(weight_v|original1)"):
        load(folder)
