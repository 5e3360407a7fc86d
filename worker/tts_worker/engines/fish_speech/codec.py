"""The audio codec (1.5: Firefly VQ-GAN, S1: modded DAC): build it from a config dict, load it strictly.

Upstream builds the codec through hydra config folders and pyrootutils, which fail from site-packages, and
loads it with strict=False (a wrong file only warns). Here the config is the one the installed package ships
(1.5: fish_speech_lib.config.FIREFLY_GAN_VQ_CONFIG; S1: fish_speech/configs/modded_dac_vq.yaml), optionally
overridden by a `codec_config.json` in the checkpoint folder (hyperparameters only, never `_target_`: the
tiny test checkpoints use it), instantiated with hydra.utils.instantiate, and loaded strictly.
"""

from __future__ import annotations

import copy
import json
import logging
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from tts_worker.engines.base import EngineLoadError
from tts_worker.engines.fish_speech.checkpoint import CheckpointLayout, Family

log = logging.getLogger(__name__)

_FORBIDDEN_KEYS = {"_target_", "_partial_", "_args_", "_recursive_", "_convert_"}


def default_codec_config(family: Family) -> dict[str, Any]:
    """The codec config the installed upstream package ships for this family."""
    if family is Family.V1_5:
        from fish_speech_lib.config import FIREFLY_GAN_VQ_CONFIG

        return copy.deepcopy(FIREFLY_GAN_VQ_CONFIG)
    from omegaconf import OmegaConf

    text = resources.files("fish_speech").joinpath("configs/modded_dac_vq.yaml").read_text(encoding="utf-8")
    container = OmegaConf.to_container(OmegaConf.create(text), resolve=True)
    assert isinstance(container, dict)
    return {str(k): v for k, v in container.items()}


def merge_override(base: dict[str, Any], override: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Deep-merge hyperparameters over `base`; class targets may not be changed from a file."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if key in _FORBIDDEN_KEYS:
            raise EngineLoadError(f"{where}: key {key!r} is not allowed (only hyperparameters may be overridden)")
        if isinstance(value, Mapping):
            current = merged.get(key)
            if not isinstance(current, dict):
                raise EngineLoadError(f"{where}: {key!r} is not a section of the codec config")
            merged[key] = merge_override(current, value, f"{where}.{key}")
        else:
            merged[key] = value
    return merged


def codec_config(layout: CheckpointLayout) -> dict[str, Any]:
    config = default_codec_config(layout.family)
    if layout.codec_override is not None:
        try:
            override = json.loads(layout.codec_override.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise EngineLoadError(f"{layout.codec_override} is not readable JSON: {exc}") from exc
        if not isinstance(override, dict):
            raise EngineLoadError(f"{layout.codec_override} is not a JSON object")
        config = merge_override(config, override, str(layout.codec_override))
    return config


def build_codec(config: Mapping[str, Any]) -> torch.nn.Module:
    """Instantiate the (randomly initialised) codec module from a config dict."""
    from hydra.utils import instantiate

    return instantiate(copy.deepcopy(dict(config)))


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """torch.load a weights file safely (weights_only, memory-mapped), unwrapping Lightning containers."""
    try:
        weights = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as exc:  # a truncated or foreign file raises many kinds of error
        raise EngineLoadError(f"{path} cannot be read as torch weights: {type(exc).__name__}: {exc}") from exc
    if isinstance(weights, dict) and "state_dict" in weights and isinstance(weights["state_dict"], dict):
        weights = weights["state_dict"]
    if not isinstance(weights, dict) or not weights:
        raise EngineLoadError(f"{path} holds no state dict")
    return weights


def load_checked(module: torch.nn.Module, weights: Mapping[str, torch.Tensor], source: Path) -> None:
    """load_state_dict that fails fast: any missing, unexpected or mis-shaped key is an EngineLoadError."""
    try:
        result = module.load_state_dict(dict(weights), strict=False, assign=True)
    except RuntimeError as exc:  # shape mismatches raise even with strict=False
        lines = [line.strip() for line in str(exc).splitlines() if "size mismatch" in line]
        detail = "; ".join(lines[:3]) or str(exc)[:500]
        more = f" (and {len(lines) - 3} more)" if len(lines) > 3 else ""
        raise EngineLoadError(f"{source} does not fit this model: {detail}{more}") from exc
    problems = []
    if result.missing_keys:
        problems.append(f"{len(result.missing_keys)} missing key(s), e.g. {', '.join(result.missing_keys[:3])}")
    if result.unexpected_keys:
        problems.append(
            f"{len(result.unexpected_keys)} unexpected key(s), e.g. {', '.join(result.unexpected_keys[:3])}"
        )
    if problems:
        raise EngineLoadError(f"{source} does not match the model it should hold: {'; '.join(problems)}")


def codebook_count(codec: torch.nn.Module, family: Family) -> int:
    """How many codebooks one codec frame has (the LLM must emit exactly as many)."""
    quantizer: Any = codec.quantizer
    if family is Family.V1_5:
        fsq = quantizer.residual_fsq
        return int(fsq.groups) * int(fsq.rvqs[0].num_quantizers)
    return 1 + int(quantizer.quantizer.n_codebooks)


def codec_sample_rate(codec: torch.nn.Module, family: Family) -> int:
    if family is Family.V1_5:
        return int(codec.spec_transform.sample_rate)
    return int(codec.sample_rate)


def load_codec(layout: CheckpointLayout, device: torch.device,
               config: Optional[Mapping[str, Any]] = None) -> torch.nn.Module:
    """Build the codec for `layout`, load its weights strictly, move it to `device` in eval mode."""
    config = config if config is not None else codec_config(layout)
    try:
        codec = build_codec(config)
    except Exception as exc:  # hydra wraps constructor errors in its own types
        name = layout.family.display_name
        raise EngineLoadError(f"cannot build the {name} codec: {type(exc).__name__}: {exc}") from exc
    weights = read_state_dict(layout.codec_weights)
    if any(k.startswith("generator.") for k in weights):
        # Training checkpoints hold generator + discriminator; inference needs the generator only.
        weights = {k[len("generator."):]: v for k, v in weights.items() if k.startswith("generator.")}
    load_checked(codec, weights, layout.codec_weights)
    return codec.eval().to(device)
