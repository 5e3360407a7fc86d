"""A batched decode step over the DualARTransformer's own modules (both 1.5 and S1-mini).

Upstream's generation runs one request at a time (its KV caches have batch size 1 and one shared position).
This module owns KV caches with a batch dimension of `slots` rows, each row with its own position, and runs
one decode step for all rows at once: the slow transformer over the rows' last tokens, then the fast
(codebook) transformer, sampling every row with its own temperature, top-p, repetition penalty and random numbers
drawn from its own torch.Generator (seeded from the job's seed).

Shapes depend only on `slots` and on the attention span (the longest busy row, rounded up to SPAN_BUCKET):
every step computes all `slots` rows (idle rows compute values nobody reads), so a row's arithmetic does not
depend on its batch mates' values, and a compiled step sees few shapes. Prefill (a job's prompt) runs per
row with batch size 1 into that row's slice of the caches. Only the weights and the layers' norms /
feed-forwards / projections are upstream's; attention, caches, positions and sampling are written here.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from tts_worker.engines.fish_speech.checkpoint import Family

REPETITION_WINDOW = 16
SEMANTIC_CODES = 1024
SPAN_BUCKET = 256


def find_multiple(n: int, k: int) -> int:
    return n if n % k == 0 else n + k - (n % k)


@dataclasses.dataclass(frozen=True, slots=True)
class CacheShape:
    """What one row of KV cache needs (from the model config), and what a batch of them costs."""

    n_layer: int
    n_local_heads: int
    head_dim: int
    max_seq_len: int
    n_fast_layer: int
    fast_local_heads: int
    fast_head_dim: int
    num_codebooks: int
    dtype_bytes: int

    @classmethod
    def of(cls, model: Any) -> "CacheShape":
        config = model.config
        slow = model.layers[0].attention
        fast = model.fast_layers[0].attention
        dtype = next(model.parameters()).dtype
        return cls(n_layer=len(model.layers), n_local_heads=int(slow.n_local_heads), head_dim=int(slow.head_dim),
                   max_seq_len=find_multiple(int(config.max_seq_len), 8), n_fast_layer=len(model.fast_layers),
                   fast_local_heads=int(fast.n_local_heads), fast_head_dim=int(fast.head_dim),
                   num_codebooks=int(config.num_codebooks), dtype_bytes=torch.finfo(dtype).bits // 8)

    @property
    def bytes_per_row(self) -> int:
        """K and V for every slow layer over max_seq_len positions, plus the fast layers' codebook cache."""
        slow = self.n_layer * 2 * self.n_local_heads * self.head_dim * self.max_seq_len
        fast = self.n_fast_layer * 2 * self.fast_local_heads * self.fast_head_dim * self.num_codebooks
        return (slow + fast) * self.dtype_bytes


def _rope(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotary embedding as a complex product; x (b, t, h, d), freqs complex (b or 1, t, d/2): per row and token."""
    rotated = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2)) * freqs.unsqueeze(2)
    return torch.view_as_real(rotated).flatten(3).type_as(x)


def _norm(module: Any, x: torch.Tensor) -> torch.Tensor:
    """Upstream's RMSNorm (computed in float32, then scaled in the model's dtype), as one fused op in fp32."""
    if x.dtype == torch.float32:
        return F.rms_norm(x, module.weight.shape, module.weight, module.eps)
    return F.rms_norm(x.float(), module.weight.shape, eps=module.eps).type_as(x) * module.weight


def _attend(attn: Any, x: torch.Tensor, freqs: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
            write: "Writer", mask: Optional[torch.Tensor], span: int) -> torch.Tensor:
    """One attention block over an explicit cache: project, rotate, write the new keys, attend over `span`."""
    b, t, _ = x.shape
    n_head, n_local, head_dim = int(attn.n_head), int(attn.n_local_heads), int(attn.head_dim)
    q_size, kv_size = n_head * head_dim, n_local * head_dim
    q, k, v = attn.wqkv(x).split([q_size, kv_size, kv_size], dim=-1)
    q = q.view(b, t, n_head, head_dim)
    k = k.view(b, t, n_local, head_dim)
    v = v.view(b, t, n_local, head_dim)
    if getattr(attn, "attention_qk_norm", False):
        q = attn.q_norm(q)
        k = attn.k_norm(k)
    q = _rope(q, freqs).transpose(1, 2)
    k = _rope(k, freqs).transpose(1, 2)
    v = v.transpose(1, 2)
    write(k_cache, v_cache, k, v)
    keys, values = k_cache[:, :, :span], v_cache[:, :, :span]
    gqa = n_head != n_local
    if mask is None:
        y = F.scaled_dot_product_attention(q, keys, values, is_causal=True, enable_gqa=gqa)
    else:
        y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, enable_gqa=gqa)
    return attn.wo(y.transpose(1, 2).contiguous().view(b, t, q_size))


def _sort_descending(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows sorted high to low, and the order. On CPU numpy's introsort is ~5x faster than torch.sort here."""
    if logits.device.type != "cpu":
        return torch.sort(logits, dim=-1, descending=True)
    order = torch.from_numpy(np.argsort(-logits.numpy(), axis=-1))
    return logits.gather(1, order), order


Writer = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], None]


def _block(layer: Any, x: torch.Tensor, freqs: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
           write: Writer, mask: Optional[torch.Tensor], span: int) -> torch.Tensor:
    """One transformer block (upstream's TransformerBlock.forward, with this module's attention)."""
    attended = _attend(layer.attention, _norm(layer.attention_norm, x), freqs, k_cache, v_cache, write, mask, span)
    h = x + attended
    return h + layer.feed_forward(_norm(layer.ffn_norm, h))


class BatchModel:
    """KV caches for `slots` rows and the batched decode step of one loaded DualARTransformer."""

    def __init__(self, model: Any, family: Family, slots: int, device: torch.device) -> None:
        self.model = model
        self.family = family
        self.slots = slots
        self.device = device
        self.shape = CacheShape.of(model)
        tokenizer = model.tokenizer
        self.semantic_begin = int(tokenizer.semantic_begin_id)
        self.semantic_end = int(tokenizer.semantic_end_id)
        self.im_end = int(tokenizer.get_token_id("<|im_end|>"))
        self.vocab = int(model.config.vocab_size)
        self.codes = min(int(model.config.codebook_size), SEMANTIC_CODES)
        self.num_codebooks = self.shape.num_codebooks
        dtype = next(model.parameters()).dtype
        s = self.shape
        with torch.device(device):
            self.k = [torch.zeros(slots, s.n_local_heads, s.max_seq_len, s.head_dim, dtype=dtype)
                      for _ in range(s.n_layer)]
            self.v = [torch.zeros_like(c) for c in self.k]
            self.fk = [torch.zeros(slots, s.fast_local_heads, s.num_codebooks, s.fast_head_dim, dtype=dtype)
                       for _ in range(s.n_fast_layer)]
            self.fv = [torch.zeros_like(c) for c in self.fk]
            self.rows = torch.arange(slots)
            self.positions_s = torch.arange(s.max_seq_len)
            self.positions_f = torch.arange(s.num_codebooks)
            # Per-row state the step reads: last tokens, next position, sampling settings, recent tokens.
            self.tokens = torch.zeros(slots, s.num_codebooks + 1, dtype=torch.long)
            self.pos = torch.zeros(slots, dtype=torch.long)
            self.inv_temperature = torch.ones(slots, 1)
            self.top_p = torch.ones(slots, 1)
            self.penalty = torch.ones(slots, 1)
            self.inv_penalty = torch.ones(slots, 1)
            self.freqs = torch.view_as_complex(model.freqs_cis.float().contiguous())
            self.fast_freqs = torch.view_as_complex(model.fast_freqs_cis.float().contiguous())
            self.window = torch.zeros(slots, s.num_codebooks + 1, REPETITION_WINDOW, dtype=torch.long)
            self.window_valid = torch.zeros(slots, REPETITION_WINDOW, dtype=torch.bool)
            # One uniform draw per row and sampled token (main token, then codebooks 1..n-1), per step.
            self.uniform = torch.full((slots, s.num_codebooks), 0.5)
        self._generators: list[Optional[torch.Generator]] = [None] * slots
        self._filled = [0] * slots  # entries of the repetition window in use, per row
        self._host_pos = [0] * slots  # = self.pos, without a device sync
        self.fixed_span = False  # True: always attend over max_seq_len (one shape for a compiled step)
        self.step_fn: Callable[[int], torch.Tensor] = self._step

    @property
    def kv_bytes(self) -> int:
        return sum(c.numel() * c.element_size() for c in (*self.k, *self.v, *self.fk, *self.fv))

    # ---- pieces of the forward pass ---------------------------------------------------------------

    def _embed(self, inp: torch.Tensor) -> torch.Tensor:
        """inp (b, num_codebooks + 1, t) -> (b, t, dim): token embedding + codebook embeddings on VQ tokens."""
        model, config = self.model, self.model.config
        if self.family is Family.V1_5:
            return model.embed(inp, share_codebook_embeddings=getattr(config, "share_codebook_embeddings", True))
        embeds = [model.codebook_embeddings(inp[:, i + 1] + i * config.codebook_size)
                  for i in range(config.num_codebooks)]
        vq_sum = torch.stack(embeds, dim=1).sum(dim=1)
        vq_mask = (inp[:, 0] >= self.semantic_begin) & (inp[:, 0] <= self.semantic_end)
        vq_sum = torch.where(vq_mask.unsqueeze(-1), vq_sum, torch.zeros_like(vq_sum))
        x = model.embeddings(inp[:, 0]) + vq_sum
        if getattr(config, "scale_codebook_embeddings", False):
            x = torch.where(vq_mask.unsqueeze(-1), x / (config.num_codebooks + 1) ** 0.5, x)
        return x

    def _head(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Last hidden state (b, 1, dim) -> token logits (b, vocab) and the fast transformer's input."""
        model = self.model
        out = _norm(model.norm, x)
        logits = F.linear(out, model.embeddings.weight) if model.config.tie_word_embeddings else model.output(out)
        return logits[:, -1].float(), model.fast_project_in(x)

    def _fast(self, hidden: torch.Tensor, index: int) -> torch.Tensor:
        """One fast-transformer position for all rows; returns codebook logits (b, codes)."""
        model = self.model
        freqs = self.fast_freqs[index].view(1, 1, -1)
        mask = (self.positions_f <= index).view(1, 1, 1, -1)
        x = hidden.view(hidden.shape[0], 1, -1)
        for n, layer in enumerate(model.fast_layers):
            def write(kc: torch.Tensor, vc: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
                kc[:, :, index] = k[:, :, 0]
                vc[:, :, index] = v[:, :, 0]

            x = _block(layer, x, freqs, self.fk[n], self.fv[n], write, mask, self.shape.num_codebooks)
        return model.fast_output(_norm(model.fast_norm, x))[:, -1, : self.codes].float()

    def _sample(self, logits: torch.Tensor, hits: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
        """Per-row repetition penalty on recent tokens, top-p, temperature, then one inverse-CDF draw.

        The same distribution as upstream's (softmax of the temperature-scaled top-p survivors), drawn with
        one uniform number per row instead of a vocabulary of exponential noise.
        """
        width = logits.shape[1]
        penalised = torch.where(logits < 0, logits * self.penalty, logits * self.inv_penalty)
        logits = torch.where(hits[:, :width], penalised, logits)
        sorted_logits, order = _sort_descending(logits)
        cumulative = torch.cumsum(torch.softmax(sorted_logits, dim=-1), dim=-1)
        drop = cumulative > self.top_p
        drop[:, 0] = False
        scaled = (sorted_logits * self.inv_temperature).masked_fill_(drop, float("-inf"))
        cdf = torch.cumsum(torch.softmax(scaled, dim=-1), dim=-1)
        picked = torch.searchsorted(cdf, uniform.unsqueeze(1) * cdf[:, -1:], right=True).clamp_(max=width - 1)
        return order.gather(1, picked).squeeze(1)

    def _step(self, span: int) -> torch.Tensor:
        """One token for every row: (slots, num_codebooks + 1), main token first then the codebooks.

        Attention reads the first `span` cache positions of every row (masked per row to its own length).
        """
        model = self.model
        pos = self.pos
        x = self._embed(self.tokens.unsqueeze(-1))
        freqs = self.freqs[pos].unsqueeze(1)
        mask = (self.positions_s[:span].unsqueeze(0) <= pos.unsqueeze(1)).view(self.slots, 1, 1, -1)
        rows = self.rows

        def write(kc: torch.Tensor, vc: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
            kc[rows, :, pos] = k[:, :, 0]
            vc[rows, :, pos] = v[:, :, 0]

        for n, layer in enumerate(model.layers):
            x = _block(layer, x, freqs, self.k[n], self.v[n], write, mask, span)
        logits, hidden = self._head(x)
        # Recent tokens per row and codebook (the repetition window); idle window entries point past the vocab.
        recent = torch.where(self.window_valid.unsqueeze(1), self.window, self.vocab)
        hits = torch.zeros(self.slots, self.num_codebooks + 1, self.vocab + 1, dtype=torch.bool,
                           device=self.device).scatter_(2, recent, True)
        main = self._sample(logits, hits[:, 0], self.uniform[:, 0])
        for cache in (*self.fk, *self.fv):
            cache.zero_()
        self._fast(hidden, 0)
        code = torch.clamp(main - self.semantic_begin, min=0)
        out = [main, code]
        for index in range(1, self.num_codebooks):
            logits = self._fast(model.fast_embeddings(code), index)
            code = self._sample(logits, hits[:, index + 1], self.uniform[:, index])
            out.append(code)
        return torch.stack(out, dim=1)

    # ---- row life cycle ---------------------------------------------------------------------------

    def prefill(self, slot: int, prompt: torch.Tensor, temperature: float, top_p: float, penalty: float,
                generator: torch.Generator) -> None:
        """Run a prompt (num_codebooks + 1, L) into row `slot` and leave the row ready for its first step.

        The step after prefill produces the row's first token: the prompt's last column is fed as the row's
        current token (its keys are written again at the same position, which is idempotent).
        """
        model = self.model
        length = int(prompt.shape[1])
        for caches in (self.k, self.v):
            for cache in caches:
                cache[slot].zero_()
        if length > 1:
            inp = prompt[None, :, :-1].to(self.device, torch.long)
            x = self._embed(inp)
            freqs = self.freqs[: length - 1].unsqueeze(0)
            for n, layer in enumerate(model.layers):
                def write(kc: torch.Tensor, vc: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
                    kc[:, :, : length - 1] = k
                    vc[:, :, : length - 1] = v

                x = _block(layer, x, freqs, self.k[n][slot: slot + 1], self.v[n][slot: slot + 1], write, None,
                           length - 1)
        self.tokens[slot] = prompt[:, -1].to(self.device, torch.long)
        self.pos[slot] = length - 1
        self._host_pos[slot] = length - 1
        self.inv_temperature[slot] = 1.0 / max(temperature, 1e-5)
        self.top_p[slot] = top_p
        self.penalty[slot] = penalty
        self.inv_penalty[slot] = 1.0 / penalty
        self.window[slot] = 0
        self.window_valid[slot] = False
        self._filled[slot] = 0
        self._generators[slot] = generator

    def release(self, slot: int) -> None:
        self._generators[slot] = None
        self.pos[slot] = 0
        self._host_pos[slot] = 0
        self.tokens[slot] = 0

    def step(self, active: list[int]) -> torch.Tensor:
        """Draw each active row's random numbers from its own generator, run the step, advance the active rows."""
        for slot in active:
            generator = self._generators[slot]
            assert generator is not None
            if generator.device == self.uniform.device:
                self.uniform[slot].uniform_(generator=generator)
            else:  # e.g. MPS: torch has no generator there, draw on the CPU
                self.uniform[slot].copy_(torch.rand(self.num_codebooks, generator=generator))
        # Attention spans the longest busy row, rounded up to a bucket so a compiled step sees few shapes.
        longest = max(self._host_pos[slot] for slot in active) + 1
        span = self.shape.max_seq_len if self.fixed_span else min(self.shape.max_seq_len,
                                                                  find_multiple(longest, SPAN_BUCKET))
        tokens = self.step_fn(span).clone()
        index = torch.tensor(active, device=self.device, dtype=torch.long)
        self.tokens[index] = tokens[index]
        self.pos[index] += 1
        # The repetition window holds each row's last REPETITION_WINDOW tokens (oldest first).
        self.window[index] = torch.cat([self.window[index, :, 1:], tokens[index].unsqueeze(-1)], dim=-1)
        for slot in active:
            self._host_pos[slot] += 1
            self._filled[slot] = min(self._filled[slot] + 1, REPETITION_WINDOW)
            self.window_valid[slot, REPETITION_WINDOW - self._filled[slot]:] = True
        return tokens

    def close(self) -> None:
        self.k, self.v, self.fk, self.fv = [], [], [], []
        self.model = None
