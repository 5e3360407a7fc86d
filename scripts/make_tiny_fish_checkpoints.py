#!/usr/bin/env python
"""Make tiny, randomly initialised Fish Speech checkpoints in the real 1.5 and S1-mini folder layouts.

They exercise the real loaders, tokenizers, generation loops and codecs on CPU in seconds; they speak noise.
Built with the installed upstream classes (fish-speech-lib for 1.5, fish-speech 0.1.0 for S1-mini) and the
engine's own codec builder, so the files match what those classes expect. Deterministic (fixed seed).

    python scripts/make_tiny_fish_checkpoints.py --out .cache/fish-tiny [--family all|1.5|s1-mini] [--force]

Writes OUT/fish-speech-1.5/ and OUT/openaudio-s1-mini/; skips a folder whose stamp matches this recipe.
Never commit the output (it lives under a git-ignored folder).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

RECIPE_VERSION = 2  # 2: codec files written the way upstream's real files are (see as_real_codec_file)
SEED = 1234

# vocab = 256 byte tokens + the family's special tokens + 1024 semantic tokens.
LLM_CONFIG_COMMON: dict[str, Any] = {
    "model_type": "dual_ar", "n_layer": 2, "n_head": 4, "n_local_heads": 2, "dim": 64, "head_dim": 16,
    "intermediate_size": 128, "codebook_size": 1024, "n_fast_layer": 1, "fast_dim": 64, "fast_n_head": 4,
    "fast_n_local_heads": 2, "fast_head_dim": 16, "fast_intermediate_size": 128, "tie_word_embeddings": False,
    "rope_base": 10000, "norm_eps": 1e-6, "dropout": 0.0, "attention_qkv_bias": False,
}
LLM_CONFIG = {
    "1.5": {**LLM_CONFIG_COMMON, "vocab_size": 256 + 12 + 1024, "num_codebooks": 8, "max_seq_len": 2048},
    # S1 keeps 2048 positions for generation: max_seq_len must leave room for the prompt.
    "s1-mini": {**LLM_CONFIG_COMMON, "vocab_size": 256 + 15 + 1024, "num_codebooks": 4, "max_seq_len": 2560},
}
# Hyperparameter overrides of the packaged codec configs (class targets stay upstream's).
CODEC_OVERRIDE: dict[str, dict[str, Any]] = {
    "1.5": {
        "backbone": {"input_channels": 160, "depths": [1, 1, 1, 1], "dims": [16, 16, 32, 32]},
        "head": {"num_mels": 32, "upsample_initial_channel": 64, "resblock_kernel_sizes": [3],
                 "resblock_dilation_sizes": [[1, 3, 5]]},
        # 8 groups x levels 8*8*4*4 = 1024 codes each: a random LLM emits any code in 0..1023.
        "quantizer": {"input_dim": 32, "n_groups": 8, "n_codebooks": 1, "levels": [8, 8, 4, 4]},
    },
    "s1-mini": {
        "encoder_dim": 8, "decoder_dim": 64, "encoder_transformer_layers": [0, 0, 0, 0],
        "decoder_transformer_layers": [0, 0, 0, 0],
        "quantizer": {
            "input_dim": 128, "n_codebooks": 3, "codebook_size": 1024, "semantic_codebook_size": 1024,
            "post_module": {"input_dim": 128, "window_size": 32, "config": {
                "block_size": 1024, "n_layer": 1, "n_head": 2, "dim": 64, "intermediate_size": 128,
                "head_dim": 32}},
            "pre_module": {"input_dim": 128, "window_size": 32, "config": {
                "block_size": 1024, "n_layer": 1, "n_head": 2, "dim": 64, "intermediate_size": 128,
                "head_dim": 32}},
        },
    },
}
FOLDER = {"1.5": "fish-speech-1.5", "s1-mini": "openaudio-s1-mini"}
CODEC_FILE = {"1.5": "firefly-gan-vq-fsq-8x1024-21hz-generator.pth", "s1-mini": "codec.pth"}


def recipe_stamp(family: str) -> str:
    material = json.dumps([RECIPE_VERSION, SEED, LLM_CONFIG[family], CODEC_OVERRIDE[family]], sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()


def write_byte_tokenizer(path: Path) -> None:
    """A tiktoken file with the 256 single bytes as the whole vocabulary (rank = byte value)."""
    lines = [f"{base64.b64encode(bytes([i])).decode()} {i}" for i in range(256)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def make_family(family: str, out: Path, force: bool) -> Path:
    folder = out / FOLDER[family]
    stamp_file = folder / "tiny-recipe.sha256"
    stamp = recipe_stamp(family)
    if not force and stamp_file.exists() and stamp_file.read_text().strip() == stamp:
        print(f"{folder}: up to date")
        return folder

    import torch

    from tts_worker.engines.fish_speech.checkpoint import Family
    from tts_worker.engines.fish_speech.codec import build_codec, default_codec_config, merge_override

    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.iterdir():
        if stale.is_file():
            stale.unlink()
    torch.manual_seed(SEED)
    write_byte_tokenizer(folder / "tokenizer.tiktoken")
    (folder / "config.json").write_text(json.dumps(LLM_CONFIG[family], indent=2), encoding="utf-8")

    if family == "1.5":
        from fish_speech_lib.fish_speech.models.text2semantic.llama import BaseModelArgs, DualARTransformer
        from fish_speech_lib.fish_speech.tokenizer import FishTokenizer

        tokenizer = FishTokenizer(str(folder / "tokenizer.tiktoken"))
    else:
        from fish_speech.models.text2semantic.llama import BaseModelArgs, DualARTransformer
        from fish_speech.tokenizer import FishTokenizer

        tokenizer = FishTokenizer.from_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))  # writes special_tokens.json as the real folders have it
    config = BaseModelArgs.from_pretrained(str(folder))
    vocab = len(tokenizer.all_special_tokens_with_ids) + 256
    if vocab != config.vocab_size:
        raise SystemExit(f"{family}: recipe vocab_size {config.vocab_size} != tokenizer size {vocab}")
    model = DualARTransformer(config, tokenizer=tokenizer)
    torch.save(model.state_dict(), folder / "model.pth")

    family_enum = Family(family)
    override = CODEC_OVERRIDE[family]
    codec = build_codec(merge_override(default_codec_config(family_enum), override, "recipe"))
    torch.save(as_real_codec_file(codec.state_dict(), family), folder / CODEC_FILE[family])
    (folder / "codec_config.json").write_text(json.dumps(override, indent=2), encoding="utf-8")
    llm_params = sum(p.numel() for p in model.parameters())
    codec_params = sum(p.numel() for p in codec.parameters())
    stamp_file.write_text(stamp + "\n")
    print(f"{folder}: LLM {llm_params / 1e6:.2f} M params, codec {codec_params / 1e6:.2f} M params")
    return folder


WEIGHT_NORM = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1"}
DERIVED_BUFFERS = ("freqs_cis", "causal_mask")


def as_real_codec_file(state: dict[str, Any], family: str) -> dict[str, Any]:
    """The codec weights as upstream's released files hold them, whatever the installed classes build:
    S1's codec.pth with weight norm spelt the old way (weight_g/weight_v) in the quantizer and the new way
    (parametrizations.weight.original0/1) in the encoder and decoder, and the derived freqs_cis / causal_mask
    buffers at a training-time size; 1.5's Firefly file as a Lightning `state_dict` of `generator.` and
    `discriminator.` weights, weight norm spelt the old way throughout (the installed classes build the new
    way). The engine must load exactly this, and nothing more."""
    import torch

    real: dict[str, Any] = {}
    for key, value in state.items():
        prefix, _, leaf = key.rpartition(".")
        if leaf in DERIVED_BUFFERS:
            continue
        old_style = family == "1.5" or key.startswith("quantizer.")
        for old, new in WEIGHT_NORM.items():
            if old_style and key.endswith("." + new):
                key = key[: -len(new)] + old
            elif not old_style and leaf == old:
                key = f"{prefix}.{new}"
        real[key] = value
    transformers = sorted({k.split(".layers.")[0] for k in real if ".layers." in k and k.startswith("quantizer.")})
    for owner in transformers:  # stale training-time buffers of each window-limited transformer
        real[f"{owner}.freqs_cis"] = torch.zeros(4096, 16, 2)
        real[f"{owner}.causal_mask"] = torch.ones(4096, 4096, dtype=torch.bool)[:64, :64].clone()
    if family == "1.5":
        wrapped = {f"generator.{k}": v for k, v in real.items()}
        wrapped["discriminator.mpd.convs.0.weight"] = torch.zeros(4, 1, 5, 1)
        return {"state_dict": wrapped, "epoch": 0, "global_step": 0}
    return real


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(".cache/fish-tiny"))
    parser.add_argument("--family", choices=["all", "1.5", "s1-mini"], default="all")
    parser.add_argument("--force", action="store_true", help="rebuild even when the stamp matches")
    args = parser.parse_args(argv)
    families = ["1.5", "s1-mini"] if args.family == "all" else [args.family]
    for family in families:
        make_family(family, args.out, args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
