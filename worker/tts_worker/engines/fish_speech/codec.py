"""The audio codec (1.5: Firefly VQ-GAN, S1: modded DAC): build it from a config dict, load it strictly.

What a real file may hold beyond the model's own names, and is accepted as upstream accepts it: a Lightning
`state_dict` wrapper, a `generator.` prefix (training files also hold `discriminator.` weights, dropped),
either spelling of weight norm, and the derived `freqs_cis` / `causal_mask` buffers (ignored). Anything else
that does not match (a missing weight, an unknown key, a wrong shape) is refused, naming the keys.

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
from typing import Any, Collection, Mapping, Optional

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


# Buffers the codec computes from its config at construction (rotary tables, attention masks of the
# quantizer's window-limited transformers). Real files may hold them at training-time sizes, or not at all;
# upstream's strict=False load ignores them, and so do we (from the file, and when the file lacks them).
DERIVED_BUFFERS = frozenset({"freqs_cis", "causal_mask"})
# Weight norm's two spellings: torch.nn.utils.weight_norm (old) and torch.nn.utils.parametrizations.weight_norm
# (new). Upstream's files mix them (old in the quantizer, new in the decoder) whatever the installed code builds.
_WEIGHT_NORM_NAMES = (("weight_g", "parametrizations.weight.original0"),
                      ("weight_v", "parametrizations.weight.original1"))
MAX_LISTED_KEYS = 12


def fit_weight_names(weights: Mapping[str, torch.Tensor], expected: Collection[str]) -> dict[str, torch.Tensor]:
    """The file's weights under the names the model uses: derived buffers dropped, weight norm's other
    spelling renamed where the model expects it. Nothing else changes, so anything else that does not match
    is still refused by load_checked."""
    fitted: dict[str, torch.Tensor] = {}
    for key, value in weights.items():
        if key.rpartition(".")[2] in DERIVED_BUFFERS:
            continue
        if key not in expected:
            key = _weight_norm_alias(key, expected) or key
        fitted[key] = value
    return fitted


def _weight_norm_alias(key: str, expected: Collection[str]) -> Optional[str]:
    for old, new in _WEIGHT_NORM_NAMES:
        for have, want in ((old, new), (new, old)):
            if key.endswith("." + have):
                alias = f"{key[: -len(have)]}{want}"
                if alias in expected:
                    return alias
    return None


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_LISTED_KEYS])
    return shown + (f" (and {len(keys) - MAX_LISTED_KEYS} more)" if len(keys) > MAX_LISTED_KEYS else "")


def load_checked(module: torch.nn.Module, weights: Mapping[str, torch.Tensor], source: Path) -> None:
    """load_state_dict that fails fast: any missing, unexpected or mis-shaped key is an EngineLoadError.

    Before loading, the file's names are fitted to the model (fit_weight_names); missing derived buffers are
    fine (the model computed them). The error lists the offending keys.
    """
    weights = fit_weight_names(weights, module.state_dict().keys())
    try:
        result = module.load_state_dict(dict(weights), strict=False, assign=True)
    except RuntimeError as exc:  # shape mismatches raise even with strict=False
        lines = [line.strip() for line in str(exc).splitlines() if "size mismatch" in line]
        detail = "; ".join(lines[:3]) or str(exc)[:500]
        more = f" (and {len(lines) - 3} more)" if len(lines) > 3 else ""
        raise EngineLoadError(f"{source} does not fit this model: {detail}{more}") from exc
    problems = []
    missing = [k for k in result.missing_keys if k.rpartition(".")[2] not in DERIVED_BUFFERS]
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_listed(missing)}")
    if result.unexpected_keys:
        problems.append(f"{len(result.unexpected_keys)} unexpected key(s): {_listed(result.unexpected_keys)}")
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
