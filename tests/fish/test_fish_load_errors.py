"""A folder that is not a usable checkpoint is refused at load with a message naming it and what is wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest

from fishkit import FOLDERS, SKIP_REASON, copy_checkpoint, fish_available, make_engine, tiny_dir

pytestmark = [pytest.mark.skipif(not fish_available(), reason=SKIP_REASON), pytest.mark.timeout(120)]
_ = (make_engine, tiny_dir)

from tts_worker.engines.base import EngineLoadError  # noqa: E402
from tts_worker.engines.fish_speech import FishSpeechEngine  # noqa: E402


def load(folder: Path, **options: str) -> None:
    engine = FishSpeechEngine(options={"checkpoint": str(folder), "model_version": "auto",
                                       "token_cache": "false", **options})
    try:
        engine.load()
    finally:
        engine.close()


def test_missing_and_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(EngineLoadError, match=f"{tmp_path / 'nope'} does not exist"):
        load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EngineLoadError, match="not a Fish Speech checkpoint: no codec weights.*found: nothing"):
        load(tmp_path / "empty")


def test_s2_layout_is_refused_by_name(tmp_path: Path) -> None:
    folder = tmp_path / "s2-pro"
    folder.mkdir()
    for name in ("model.safetensors", "tokenizer.json", "config.json", "codec.pth"):
        (folder / name).write_bytes(b"{}")
    with pytest.raises(EngineLoadError, match=r"S2 / Hugging Face layout \(found model.safetensors, tokenizer.json\)"):
        load(folder)


@pytest.mark.parametrize("family", list(FOLDERS))
def test_missing_files_are_named(tiny_dir: Path, tmp_path: Path, family: str) -> None:
    folder = copy_checkpoint(tiny_dir, family, tmp_path)
    (folder / "model.pth").unlink()
    (folder / "tokenizer.tiktoken").unlink()
    with pytest.raises(EngineLoadError, match=f"{folder} .* is missing model.pth, tokenizer.tiktoken"):
        load(folder)


def test_family_must_match_model_version(tiny_dir: Path, tmp_path: Path) -> None:
    folder = copy_checkpoint(tiny_dir, "1.5", tmp_path)
    with pytest.raises(EngineLoadError, match="is a Fish Speech 1.5 checkpoint .* but model_version is s1-mini"):
        load(folder, model_version="s1-mini")
    with pytest.raises(EngineLoadError, match="S2 is not supported"):
        load(folder, model_version="s2-pro")


@pytest.mark.parametrize("family", list(FOLDERS))
def test_llm_weights_with_a_missing_key_fail_fast(tiny_dir: Path, tmp_path: Path, family: str) -> None:
    import torch

    folder = copy_checkpoint(tiny_dir, family, tmp_path)
    weights = torch.load(folder / "model.pth", weights_only=True)
    del weights["norm.weight"]
    torch.save(weights, folder / "model.pth")
    with pytest.raises(EngineLoadError, match=r"model.pth does not match .* 1 missing key\(s\): norm.weight"):
        load(folder)


@pytest.mark.parametrize("family", list(FOLDERS))
def test_llm_weights_of_another_shape_fail_fast(tiny_dir: Path, tmp_path: Path, family: str) -> None:
    folder = copy_checkpoint(tiny_dir, family, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["intermediate_size"] = 96  # config no longer describes the saved weights
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(EngineLoadError, match="model.pth does not fit this model: size mismatch"):
        load(folder)


def test_codec_weights_that_are_not_torch(tiny_dir: Path, tmp_path: Path) -> None:
    folder = copy_checkpoint(tiny_dir, "s1-mini", tmp_path)
    (folder / "codec.pth").write_bytes(b"this is not a checkpoint")
    with pytest.raises(EngineLoadError, match="codec.pth cannot be read as torch weights"):
        load(folder)


def test_codec_of_the_wrong_size(tiny_dir: Path, tmp_path: Path) -> None:
    folder = copy_checkpoint(tiny_dir, "1.5", tmp_path)
    (folder / "codec_config.json").unlink()  # the packaged full-size Firefly config vs tiny weights
    with pytest.raises(EngineLoadError, match="firefly-gan-vq-fsq-8x1024-21hz-generator.pth does not fit"):
        load(folder)


def test_llm_and_codec_must_agree_on_codebooks(tiny_dir: Path, tmp_path: Path) -> None:
    folder = copy_checkpoint(tiny_dir, "s1-mini", tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["num_codebooks"] = 8
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(EngineLoadError, match="emits 8 codebooks but the codec codec.pth has 4"):
        load(folder)


def test_tokenizer_and_vocab_must_agree(tiny_dir: Path, tmp_path: Path) -> None:
    folder = copy_checkpoint(tiny_dir, "1.5", tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["vocab_size"] = 1000
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(EngineLoadError, match="semantic tokens end at id 1291 but vocab_size is 1000"):
        load(folder)


def test_codec_override_cannot_name_classes(tiny_dir: Path, tmp_path: Path) -> None:
    folder = copy_checkpoint(tiny_dir, "1.5", tmp_path)
    (folder / "codec_config.json").write_text(json.dumps({"head": {"_target_": "os.system"}}))
    with pytest.raises(EngineLoadError, match="'_target_' is not allowed"):
        load(folder)


@pytest.mark.parametrize("options, fragment", [
    ({"colour": "blue"}, "unknown option"),
    ({"compile": "true"}, "compile=true needs a CUDA device"),
    ({"precision": "fp16"}, "fp16 is not supported on cpu"),
    ({"device": "cuda"}, "no CUDA GPU"),
    ({"device": "tpu"}, "not"),
    ({"token_cache_entries": "0"}, "out of range"),
])
def test_bad_options_are_load_errors(tiny_dir: Path, options: dict[str, str], fragment: str) -> None:
    with pytest.raises(EngineLoadError, match=fragment):
        load(tiny_dir / FOLDERS["1.5"], **options)


def test_quantised_path_marker_is_refused(tiny_dir: Path, tmp_path: Path) -> None:
    base = tmp_path / "int8-models"
    base.mkdir()
    folder = copy_checkpoint(tiny_dir, "1.5", base)
    with pytest.raises(EngineLoadError, match="contains 'int8'"):
        load(folder)


def test_failed_load_leaves_no_thread(make_engine: Callable[..., Any], tiny_dir: Path, tmp_path: Path) -> None:
    folder = copy_checkpoint(tiny_dir, "s1-mini", tmp_path)
    (folder / "codec.pth").write_bytes(b"junk")
    engine = FishSpeechEngine(options={"checkpoint": str(folder), "model_version": "s1-mini"})
    with pytest.raises(EngineLoadError):
        engine.load()
    assert engine._thread is None
