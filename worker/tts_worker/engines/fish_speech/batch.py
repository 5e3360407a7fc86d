"""Continuous batching of Fish Speech jobs inside one engine (`--engine-opt max_batch=N`).

The worker runs N synthesis threads (the engine reports capacity N); each calls synthesize(), which hands its
job to the BatchScheduler and waits on the job's own result queue. The scheduler's loop runs on the engine's
inference thread (the LLM's torch work; the codec decodes on a thread of its own): at every step it admits
waiting jobs into free rows (building the prompt, encoding reference voices through the token cache,
prefilling the row), drops rows whose job was cancelled or whose consumer went away, runs one batched decode
step for all rows, and moves each row on: a row whose segment ended (end token or its token limit) hands
that segment to the codec thread, which decodes it and streams it to the job, and is prefilled with the
job's next segment, or leaves the batch.
A short line therefore never waits for a long one, and a failure while building, prefilling or decoding
one row fails only that job. A failure of the batched step itself (e.g. out of memory) fails the rows in it.

Prompts are built as upstream builds them: 1.5 segments of `split_text` with the previous segments'
tokens as context (upstream's `iterative_prompt`), a system prompt and the references before them when
there are references; S1 one `ContentSequence` per segment of the engine's own splitter.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import queue
import threading
import time
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch

from tts_worker.engines.base import EngineError, SynthesisCancelled
from tts_worker.engines.fish_speech.batch_model import BatchModel
from tts_worker.engines.fish_speech.checkpoint import Family
from tts_worker.engines.fish_speech.params import GenerationParams
from tts_worker.engines.fish_speech.text import split_text

log = logging.getLogger(__name__)

S1_GENERATION_ROOM = 2048  # S1 refuses a prompt longer than max_seq_len - 2048 (upstream's rule)
V15_GENERATION_ROOM = 1024  # 1.5 keeps at least this many positions free when choosing the context


@dataclasses.dataclass
class BatchJob:
    """One synthesize() call as the scheduler sees it."""

    job_id: str
    text: str
    speaker: Optional[str]
    params: GenerationParams
    seed: int
    cancel: threading.Event
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)
    results: "queue.Queue[tuple[str, Any]]" = dataclasses.field(default_factory=queue.Queue)
    failed: bool = False  # set by the codec thread when decoding one of its segments failed

    def cancelled(self) -> bool:
        return self.cancel.is_set() or self.stop.is_set()


@dataclasses.dataclass
class _Row:
    job: BatchJob
    segments: list[torch.Tensor]  # 1.5: the encoded segment texts; S1: whole prompts per segment
    base: list[torch.Tensor]  # 1.5: system prompt + references (empty without references)
    generator: torch.Generator
    history: list[torch.Tensor] = dataclasses.field(default_factory=list)
    index: int = 0
    limit: int = 0
    columns: list[torch.Tensor] = dataclasses.field(default_factory=list)
    produced: int = 0


class PromptBuilder:
    """Encodes a job's text and reference into per-segment prompts, as upstream's generate_long does."""

    def __init__(self, family: Family, model: Any) -> None:
        self.family = family
        self.tokenizer = model.tokenizer
        self.num_codebooks = int(model.config.num_codebooks)
        self.max_seq_len = int(model.config.max_seq_len)

    def segments(self, text: str, chunk_length: int, ref_texts: Sequence[str], ref_codes: Sequence[torch.Tensor]
                 ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(segments, base): see _Row."""
        if self.family is Family.V1_5:
            return self._v15(text, chunk_length, ref_texts, ref_codes)
        return self._s1(text, chunk_length, ref_texts, ref_codes), []

    def _v15(self, text: str, chunk_length: int, ref_texts: Sequence[str], ref_codes: Sequence[torch.Tensor]
             ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        from fish_speech_lib.fish_speech.conversation import Conversation, Message, TextPart
        from fish_speech_lib.fish_speech.models.text2semantic.inference import encode_tokens
        from fish_speech_lib.fish_speech.text import split_text as v15_split

        cpu = torch.device("cpu")
        base: list[torch.Tensor] = []
        if ref_texts:
            instruction = TextPart(text="Speak out the provided text.")
            system = Conversation(messages=[Message(role="system", parts=[instruction], cal_loss=False)])
            base.append(system.encode_for_inference(tokenizer=self.tokenizer, num_codebooks=self.num_codebooks))
            for t, c in zip(ref_texts, ref_codes, strict=True):
                base.append(encode_tokens(self.tokenizer, string=t, device=cpu, prompt_tokens=c,
                                          num_codebooks=self.num_codebooks))
        segments = [encode_tokens(self.tokenizer, string=s, device=cpu, num_codebooks=self.num_codebooks)
                    for s in v15_split(text, chunk_length)]
        return segments, base

    def _s1(self, text: str, chunk_length: int, ref_texts: Sequence[str], ref_codes: Sequence[torch.Tensor]
            ) -> list[torch.Tensor]:
        from fish_speech.content_sequence import ContentSequence, TextPart, VQPart

        prompts = []
        for chunk in split_text(text, chunk_length):
            sequence = ContentSequence(modality="interleave")
            for t, c in zip(ref_texts, ref_codes, strict=True):
                sequence.append([TextPart(text=t), VQPart(codes=c)], add_end=True, speaker=0)
            sequence.append([TextPart(text=chunk)], add_end=False, speaker=0)
            encoded, _, _ = sequence.encode_for_inference(self.tokenizer, num_codebooks=self.num_codebooks)
            if encoded.size(1) > self.max_seq_len - S1_GENERATION_ROOM:
                raise EngineError(f"prompt too long for this model: {encoded.size(1)} tokens > "
                                  f"{self.max_seq_len - S1_GENERATION_ROOM} (a shorter reference or chunk_length)")
            prompts.append(encoded)
        return prompts

    def prompt(self, row: _Row) -> torch.Tensor:
        """The full prompt for the row's current segment (1.5: with as much recent context as fits)."""
        if self.family is Family.S1_MINI:
            return row.segments[row.index]
        pieces = [*row.history, row.segments[row.index]]  # seg0, out0, seg1, out1, ..., seg_k
        budget = self.max_seq_len - V15_GENERATION_ROOM - sum(int(b.shape[1]) for b in row.base)
        if sum(int(p.shape[1]) for p in pieces) > budget and len(pieces) > 3:
            head, tail = pieces[:2], [pieces[-1]]
            used = sum(int(p.shape[1]) for p in head) + int(pieces[-1].shape[1])
            for pair in range(len(pieces) - 3, 1, -2):  # (seg_j, out_j) pairs, newest first
                size = int(pieces[pair - 1].shape[1]) + int(pieces[pair].shape[1])
                if used + size > budget:
                    break
                tail[:0] = pieces[pair - 1: pair + 1]
                used += size
            pieces = head + tail
        return torch.cat([*row.base, *pieces], dim=1)


class CodecThread:
    """Decodes finished segments on a thread of its own while the batch keeps stepping.

    Everything a job receives goes through this one FIFO (audio, then its end or error), so a job's
    results stay in order. A failed decode fails that job only.
    """

    _STOP = object()

    def __init__(self, decode: Callable[[torch.Tensor], np.ndarray], tag: str) -> None:
        self._decode = decode
        self._tag = tag
        self._queue: "queue.Queue[Any]" = queue.Queue()
        self.busy_s = 0.0
        self._thread = threading.Thread(target=self._run, name=f"{tag}-codec", daemon=True)
        self._thread.start()

    def audio(self, job: BatchJob, codes: torch.Tensor) -> None:
        self._queue.put((job, "codes", codes))

    def finish(self, job: BatchJob, result: tuple[str, Any]) -> None:
        self._queue.put((job, "result", result))

    def stop(self, timeout_s: float = 30.0) -> None:
        self._queue.put(self._STOP)
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is self._STOP:
                return
            job, kind, payload = item
            if job.failed:
                continue
            if kind == "result":
                job.results.put(payload)
                continue
            if job.cancelled():
                continue  # the batch loop reports the cancellation
            started = time.thread_time()
            try:
                with torch.inference_mode():
                    audio = self._decode(payload)
            except Exception as exc:
                log.info("[%s] job %s: codec decode failed: %s", self._tag, job.job_id, exc)
                job.failed = True
                job.results.put(("error", _job_error(exc)))
            else:
                job.results.put(("audio", audio))
            finally:
                self.busy_s += time.thread_time() - started


class BatchScheduler:
    """Runs up to `model.slots` jobs in one batched decode loop on the engine's inference thread."""

    def __init__(self, *, model: BatchModel, builder: PromptBuilder, post: Callable[[Callable[[], None]], None],
                 prompt_for: Callable[[Optional[str]], Any], decode: Callable[[torch.Tensor], np.ndarray],
                 device: torch.device, tag: str) -> None:
        self.model = model
        self.builder = builder
        self._post = post
        self._prompt_for = prompt_for
        self.codec = CodecThread(decode, tag)
        self._device = device
        self._tag = tag
        self._lock = threading.Lock()
        self._pending: "collections.deque[BatchJob]" = collections.deque()
        self._rows: dict[int, _Row] = {}
        self._running = False
        self._closing = False
        # Figures for stats() (read from the I/O thread; plain ints).
        self.steps = 0
        self.row_steps = 0
        self.peak_rows = 0
        self.jobs_done = 0

    # ---- the synthesis threads' side --------------------------------------------------------------

    def run(self, job: BatchJob) -> Iterator[np.ndarray]:
        """Queue the job and yield its segments' audio as the loop produces them."""
        with self._lock:
            if self._closing:
                raise EngineError("engine fish-speech is closing", retryable=True)
            self._pending.append(job)
            start = not self._running
            self._running = True
        if start:
            self._post(self._drive)
        return self._results(job)

    def run_here(self, job: BatchJob) -> list[np.ndarray]:
        """Run one job to the end on the calling thread, which must be the inference thread (warm-up)."""
        with self._lock:
            self._pending.append(job)
            self._running = True
        self._drive()
        return list(self._results(job))

    @staticmethod
    def _results(job: BatchJob) -> Iterator[np.ndarray]:
        while True:
            kind, value = job.results.get()
            if kind == "audio":
                yield value
            elif kind == "error":
                raise value
            else:
                return

    def active_rows(self) -> int:
        return len(self._rows)

    def close(self) -> None:
        """Fail queued and running jobs (retryable) at the loop's next step; new jobs are refused."""
        with self._lock:
            self._closing = True
            if self._running:
                return  # the loop fails what it holds at its next step
            pending = list(self._pending)
            self._pending.clear()
        for job in pending:
            self.codec.finish(job, ("error", EngineError("engine fish-speech is closing", retryable=True)))

    # ---- the inference thread's side --------------------------------------------------------------

    def _drive(self) -> None:
        try:
            with torch.inference_mode():
                while True:
                    if self._closing:
                        self._fail_all(EngineError("engine fish-speech is closing", retryable=True))
                        return
                    self._admit()
                    self._drop_cancelled()
                    if not self._rows:
                        with self._lock:
                            if not self._pending:
                                self._running = False
                                return
                        continue
                    self._step()
        except BaseException as exc:  # a bug in the loop must not leave a synthesis thread waiting forever
            log.exception("[%s] batch loop failed", self._tag)
            self._fail_all(EngineError(f"batch loop failed: {type(exc).__name__}: {exc}", retryable=True))

    def _fail_all(self, error: EngineError) -> None:
        with self._lock:
            jobs = [row.job for row in self._rows.values()] + list(self._pending)
            self._pending.clear()
            for slot in list(self._rows):
                self._release(slot)
            self._running = False
        for job in jobs:
            self.codec.finish(job, ("error", error))

    def _admit(self) -> None:
        while len(self._rows) < self.model.slots:
            with self._lock:
                if not self._pending:
                    return
                job = self._pending.popleft()
            if job.cancelled():
                self.codec.finish(job, ("error", SynthesisCancelled(f"job {job.job_id} cancelled")))
                continue
            slot = next(s for s in range(self.model.slots) if s not in self._rows)
            try:
                row = self._new_row(job)
                self._rows[slot] = row
                self._start_segment(slot, row)
            except Exception as exc:
                self._rows.pop(slot, None)
                self.model.release(slot)
                self.codec.finish(job, ("error", _job_error(exc)))

    def _new_row(self, job: BatchJob) -> _Row:
        prompt = self._prompt_for(job.speaker)
        codes = [torch.from_numpy(np.ascontiguousarray(c, dtype=np.int32)) for c in prompt.codes]
        segments, base = self.builder.segments(job.text, job.params.chunk_length, list(prompt.texts), codes)
        if not segments:
            raise EngineError("text is empty after cleaning")
        generator = torch.Generator(device=self._device if self._device.type in ("cpu", "cuda") else "cpu")
        generator.manual_seed(job.seed)
        log.debug("[%s] job %s joins the batch: seed %d, %d segment(s)", self._tag, job.job_id, job.seed,
                  len(segments))
        return _Row(job=job, segments=segments, base=base, generator=generator)

    def _start_segment(self, slot: int, row: _Row) -> None:
        prompt = self.builder.prompt(row)
        room = self.model.shape.max_seq_len - int(prompt.shape[1])
        if room < 1:
            raise EngineError(f"prompt too long for this model: {prompt.shape[1]} tokens "
                              f"(max_seq_len {self.model.shape.max_seq_len})")
        row.limit = min(row.job.params.max_new_tokens, room)
        row.columns = []
        params = row.job.params
        self.model.prefill(slot, prompt, params.temperature, params.top_p, params.repetition_penalty,
                           row.generator)

    def _drop_cancelled(self) -> None:
        with self._lock:  # jobs still waiting for a row (all rows busy) answer a cancel at once too
            waiting = [job for job in self._pending if job.cancelled()]
            for job in waiting:
                self._pending.remove(job)
        for job in waiting:
            self.codec.finish(job, ("error", SynthesisCancelled(f"job {job.job_id} cancelled")))
        for slot, row in list(self._rows.items()):
            if row.job.failed:  # its error is already on the way
                self._release(slot)
            elif row.job.cancelled():
                self._finish(slot, ("error", SynthesisCancelled(f"job {row.job.job_id} cancelled")))

    def _step(self) -> None:
        active = sorted(self._rows)
        try:
            tokens = self.model.step(active).to("cpu")
        except Exception as exc:
            error = _job_error(exc)
            for slot in active:
                self._finish(slot, ("error", error))
            return
        self.steps += 1
        self.row_steps += len(active)
        self.peak_rows = max(self.peak_rows, len(active))
        im_end = self.model.im_end
        for slot in active:
            row = self._rows[slot]
            column = tokens[slot]
            ended = int(column[0]) == im_end
            if not ended:
                row.columns.append(column)
            if ended or len(row.columns) >= row.limit:
                try:
                    self._end_segment(slot, row, column if ended else None)
                except Exception as exc:
                    self._finish(slot, ("error", _job_error(exc)))

    def _end_segment(self, slot: int, row: _Row, stop_column: Optional[torch.Tensor]) -> None:
        generated = torch.stack(row.columns, dim=1) if row.columns else None
        if generated is not None:
            self.codec.audio(row.job, generated[1:].to(torch.int32))
            row.produced += 1
        if self.builder.family is Family.V1_5:
            decoded = [c for c in (generated, None if stop_column is None else stop_column[:, None]) if c is not None]
            row.history.append(row.segments[row.index])
            if decoded:
                row.history.append(torch.cat(decoded, dim=1).to(torch.int32))
            else:  # keep the (segment, output) pairing the context selection relies on
                row.history.append(row.segments[row.index][:, :0])
        row.index += 1
        if row.index < len(row.segments) and not row.job.cancelled():
            self._start_segment(slot, row)
            return
        if row.job.cancelled():
            self._finish(slot, ("error", SynthesisCancelled(f"job {row.job.job_id} cancelled")))
        elif row.produced == 0:
            self._finish(slot, ("error", EngineError("the model generated no audio for this text")))
        else:
            self.jobs_done += 1
            self._finish(slot, ("end", None))

    def _finish(self, slot: int, result: tuple[str, Any]) -> None:
        row = self._rows.get(slot)
        self._release(slot)
        if row is not None:
            self.codec.finish(row.job, result)

    def _release(self, slot: int) -> None:
        self._rows.pop(slot, None)
        self.model.release(slot)


def _job_error(exc: BaseException) -> BaseException:
    """What the job's consumer raises: engine errors as the engine's own path maps them; anything else as
    it is (the worker's synthesis thread reports an unexpected exception as a retryable `internal` failure)."""
    if isinstance(exc, (EngineError, SynthesisCancelled)):
        return exc
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return EngineError(f"GPU out of memory: {exc}", retryable=True)
    if isinstance(exc, (AssertionError, ValueError)):
        return EngineError(f"fish-speech rejected the job: {exc}")
    return exc
