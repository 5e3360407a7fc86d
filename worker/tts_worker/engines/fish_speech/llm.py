"""The text-to-semantic model (DualARTransformer): strict checks, upstream loading, upstream generation.

1.5 runs on fish-speech-lib's vendored 1.5 tree (`fish_speech_lib.fish_speech`), S1-mini on PyPI
`fish-speech` 0.1.0 (`fish_speech`). Both loaders use strict=False and only warn about wrong weights, so
the weights are first checked against a skeleton of the model built on the meta device (no memory, no
copy): missing, unexpected or mis-shaped keys stop the load with an EngineLoadError.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any, Callable, Iterator, Sequence

import torch

from tts_worker.engines.base import EngineLoadError
from tts_worker.engines.fish_speech.checkpoint import CheckpointLayout, Family
from tts_worker.engines.fish_speech.codec import load_checked, read_state_dict
from tts_worker.engines.fish_speech.params import GenerationParams
from tts_worker.engines.fish_speech.text import split_text

log = logging.getLogger(__name__)

# S1 refuses a prompt longer than max_seq_len - 2048 (it keeps 2048 positions for generation).
S1_GENERATION_ROOM = 2048
SEMANTIC_CODES = 1024


def _upstream(family: Family) -> Any:
    """The upstream modules for a family, imported only when that family is loaded."""
    if family is Family.V1_5:
        from fish_speech_lib.fish_speech import tokenizer
        from fish_speech_lib.fish_speech.models.text2semantic import inference, llama
    else:
        from fish_speech import tokenizer
        from fish_speech.models.text2semantic import inference, llama
    return inference, llama, tokenizer


def _tokenizer(family: Family, layout: CheckpointLayout) -> Any:
    _, _, tokenizer = _upstream(family)
    try:
        if family is Family.V1_5:
            return tokenizer.FishTokenizer(str(layout.tokenizer))
        return tokenizer.FishTokenizer.from_pretrained(str(layout.folder))
    except Exception as exc:  # a corrupt tokenizer file raises ValueError, binascii.Error, KeyError...
        raise EngineLoadError(
            f"{layout.tokenizer} is not a usable Fish tokenizer: {type(exc).__name__}: {exc}") from exc


def check_llm(layout: CheckpointLayout, codec_codebooks: int) -> None:
    """Fail fast on a model.pth/config/tokenizer that do not belong together (before the real load)."""
    _, llama, _ = _upstream(layout.family)
    try:
        config = llama.BaseModelArgs.from_pretrained(str(layout.folder))
    except (TypeError, ValueError, KeyError) as exc:
        raise EngineLoadError(f"{layout.folder}/config.json does not describe a model: {exc}") from exc
    tokenizer = _tokenizer(layout.family, layout)
    semantic_end = int(tokenizer.semantic_end_id)
    if semantic_end >= config.vocab_size:
        raise EngineLoadError(
            f"{layout.tokenizer} and config.json disagree: semantic tokens end at id {semantic_end} but "
            f"vocab_size is {config.vocab_size}"
        )
    if config.num_codebooks != codec_codebooks:
        raise EngineLoadError(
            f"{layout.folder}: the model emits {config.num_codebooks} codebooks but the codec "
            f"{layout.codec_weights.name} has {codec_codebooks}"
        )
    if config.codebook_size < SEMANTIC_CODES:
        raise EngineLoadError(f"{layout.folder}/config.json: codebook_size {config.codebook_size} < {SEMANTIC_CODES}")
    if layout.family is Family.S1_MINI and config.max_seq_len <= S1_GENERATION_ROOM:
        raise EngineLoadError(
            f"{layout.folder}/config.json: max_seq_len {config.max_seq_len} leaves no room for a prompt "
            f"(S1 keeps {S1_GENERATION_ROOM} positions for generation)"
        )
    weights = read_state_dict(layout.llm_weights)
    if next(iter(weights)).startswith("model."):
        weights = OrderedDict((k.replace("model.", "", 1), v) for k, v in weights.items())
    if layout.family is Family.S1_MINI:
        # Upstream drops these before loading (the audio projector is not used for TTS).
        weights = OrderedDict((k, v) for k, v in weights.items() if "audio_" not in k)
    model_cls = llama.DualARTransformer if config.model_type == "dual_ar" else llama.NaiveTransformer
    with torch.device("meta"):
        skeleton = model_cls(config, tokenizer=tokenizer)
    load_checked(skeleton, weights, layout.llm_weights)
    del skeleton, weights


class SemanticModel:
    """A loaded LLM and the upstream decode step; yields codec codes per text segment."""

    def __init__(self, layout: CheckpointLayout, device: torch.device, precision: torch.dtype,
                 compile: bool) -> None:
        self.layout = layout
        self.family = layout.family
        self.device = device
        self.compile = compile
        inference, _, _ = _upstream(self.family)
        self._inference = inference
        started = time.monotonic()
        if self.family is Family.V1_5:
            model, decode = inference.load_model(str(layout.folder), device, precision, compile=compile)
            # fish-speech-lib's own queue sets up a fixed 4096-position cache; size it from the config.
            with torch.device(device):
                model.setup_caches(max_batch_size=1, max_seq_len=model.config.max_seq_len,
                                   dtype=next(model.parameters()).dtype)
        else:
            model, decode = inference.init_model(str(layout.folder), device, precision, compile=compile)
        self.model = model.eval()
        self._decode = decode
        log.info("loaded %s LLM from %s in %.2f s", self.family.display_name, layout.folder, time.monotonic() - started)

    @property
    def num_codebooks(self) -> int:
        return int(self.model.config.num_codebooks)

    def generate(self, text: str, prompt_texts: Sequence[str], prompt_tokens: Sequence[torch.Tensor],
                 params: GenerationParams, seed: int, check: Callable[[], None]) -> Iterator[torch.Tensor]:
        """Codes (num_codebooks, T) per generated segment; `check` runs before every decode step."""
        decode = self._decode

        def guarded_decode(*args: Any, **kwargs: Any) -> torch.Tensor:
            check()
            return decode(*args, **kwargs)

        if self.family is Family.V1_5:
            yield from self._generate_v15(text, prompt_texts, prompt_tokens, params, seed, guarded_decode)
        else:
            yield from self._generate_s1(text, prompt_texts, prompt_tokens, params, seed, guarded_decode)

    def _generate_v15(self, text: str, prompt_texts: Sequence[str], prompt_tokens: Sequence[torch.Tensor],
                      params: GenerationParams, seed: int, decode: Callable[..., torch.Tensor]
                      ) -> Iterator[torch.Tensor]:
        # generate_long splits the text by UTF-8 length itself (iterative_prompt) and yields one
        # response per chunk; its sampling RNG is per request (seeded), not process-global.
        responses = self._inference.generate_long(
            model=self.model,
            decode_one_token=decode,
            text=text,
            max_new_tokens=params.max_new_tokens,
            top_p=params.top_p,
            repetition_penalty=params.repetition_penalty,
            temperature=params.temperature,
            compile=self.compile,
            iterative_prompt=True,
            max_length=int(self.model.config.max_seq_len),
            chunk_length=params.chunk_length,
            prompt_text=list(prompt_texts) if prompt_texts else None,
            prompt_tokens=list(prompt_tokens) if prompt_tokens else None,
            seed=seed,
        )
        for response in responses:
            if response.action == "next":
                break
            yield response.codes

    def _generate_s1(self, text: str, prompt_texts: Sequence[str], prompt_tokens: Sequence[torch.Tensor],
                     params: GenerationParams, seed: int, decode: Callable[..., torch.Tensor]
                     ) -> Iterator[torch.Tensor]:
        # S1's generate_long does not split text, and samples from the process-global RNG: seed it here
        # (all torch work of this engine runs on one thread, so nothing else draws from it meanwhile).
        torch.manual_seed(seed)
        for chunk in split_text(text, params.chunk_length):
            responses = self._inference.generate_long(
                model=self.model,
                device=self.device,
                decode_one_token=decode,
                text=chunk,
                max_new_tokens=params.max_new_tokens,
                top_p=params.top_p,
                repetition_penalty=params.repetition_penalty,
                temperature=params.temperature,
                compile=self.compile,
                # Upstream iterates `prompt_tokens` unconditionally: no reference means empty lists.
                prompt_text=list(prompt_texts),
                prompt_tokens=list(prompt_tokens),
            )
            for response in responses:
                if response.action == "next":
                    break
                yield response.codes

    def close(self) -> None:
        self.model = None
        self._decode = None

