"""FishSpeechEngine: Fish Speech 1.5 / OpenAudio S1-mini behind the worker's engine interface.

Options (`--engine-opt key=value`, or a RELOAD's options):

| option | default | meaning |
|---|---|---|
| checkpoint | ./checkpoints/fish-speech-1.5 (or openaudio-s1-mini) | the checkpoint folder |
| model_version | MODEL_VERSION (1.5) | 1.5, s1-mini or auto; must match the folder's family |
| device | AUDIO_DEVICE (auto) | auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps |
| precision | auto | auto (bf16 where supported, else fp16 on GPU, fp32 on CPU), bf16, fp16, fp32 |
| compile | false | torch.compile the decode step (CUDA only) |
| warmup | = compile | synthesize a short line at load (compiles the graphs before the first job) |
| voices_dir | TTS_VOICES_DIR or ./voices | reference voices, see voices.py |
| token_cache | SEMANTIC_TOKEN_CACHE (true) | keep encoded references (memory LRU + disk) |
| token_cache_dir | ~/.cache/tts-broker/fish-tokens | disk part of the cache; `none` = memory only |
| token_cache_entries | 64 | memory LRU size (reference clips) |
| max_reference_s | 30 | longest reference clip accepted |
| preload_voices | (none) | comma-separated speakers, or `*`, to encode at load (they start warm) |
| torch_threads | 0 (torch's default) | CPU threads for torch |
| max_batch | 1 | jobs decoded together in one batched loop (batch.py); capacity = what fits in memory |
| batch_memory_mb | 0 (auto) | memory budget for the batch's KV caches; 0 = a share of free GPU memory / RAM |

Nothing is ever downloaded: the hub libraries are switched offline before anything is imported.
"""

from __future__ import annotations

import gc
import itertools
import logging
import os
import threading
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

import numpy as np

from tts_worker.engines.base import (
    AudioChunk,
    EngineError,
    EngineInfo,
    EngineLoadError,
    SynthesisCancelled,
    SynthesisRequest,
    float_to_int16,
)
from tts_worker.engines.fish_speech.checkpoint import CheckpointLayout, Family, detect_layout, parse_model_version
from tts_worker.engines.fish_speech.inference_thread import InferenceThread
from tts_worker.engines.fish_speech.params import GenerationParams, params_from_voice
from tts_worker.engines.options import OptionReader

log = logging.getLogger(__name__)

LICENCE = "code Apache-2.0 (fish-speech, fish-speech-lib); weights CC-BY-NC-SA-4.0 (Fish Audio)"
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "HF_HUB_DISABLE_TELEMETRY": "1", "TQDM_DISABLE": "1"}
WARMUP_TEXT = "Warm-up."
CLOSE_TIMEOUT_S = 60.0
MAX_BATCH = 64
# Share of the free memory (after the models are loaded) the batch's KV caches may take.
BATCH_MEMORY_SHARE = {"cuda": 0.7, "cpu": 0.5}
_instances = itertools.count(1)


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tts-broker" / "fish-tokens"


class FishSpeechEngine:
    """Fish Speech text-to-semantic LLM + codec, one job at a time on one inference thread."""

    name = "fish-speech"
    licence = LICENCE
    OPTIONS = {"checkpoint", "model_version", "device", "precision", "compile", "warmup", "voices_dir",
               "token_cache", "token_cache_dir", "token_cache_entries", "max_reference_s", "preload_voices",
               "torch_threads", "max_batch", "batch_memory_mb"}

    def __init__(self, *, options: Mapping[str, Any], settings: Any = None) -> None:
        options = dict(options)
        if isinstance(options.get("model_version"), (int, float)) and not isinstance(options["model_version"], bool):
            options["model_version"] = str(options["model_version"])  # a RELOAD may send 1.5 as a number
        reader = OptionReader(self.name, options, self.OPTIONS)
        version = reader.str("model_version") or str(getattr(settings, "model_version", "1.5"))
        self.expected_family: Optional[Family] = parse_model_version(version)
        default_family = self.expected_family or Family.V1_5
        self.checkpoint = Path(reader.str("checkpoint") or Path("checkpoints") / default_family.default_folder)
        self.device_name = reader.str("device") or str(getattr(settings, "device", "auto"))
        self.precision_name = reader.str("precision", "auto") or "auto"
        self.compile = reader.bool("compile", False)
        self.warmup = reader.bool("warmup", self.compile)
        self.voices_dir = Path(reader.str("voices_dir") or os.environ.get("TTS_VOICES_DIR") or "voices")
        self.token_cache = reader.bool("token_cache", bool(getattr(settings, "semantic_token_cache", True)))
        cache_dir = reader.str("token_cache_dir")
        self.token_cache_dir: Optional[Path] = (
            None if cache_dir is not None and cache_dir.strip().lower() == "none"
            else Path(cache_dir) if cache_dir else _default_cache_dir()
        )
        self.token_cache_entries = reader.int("token_cache_entries", 64, min=1, max=100_000)
        self.max_reference_s = reader.float("max_reference_s", 30.0, min=1.0, max=600.0)
        self.preload_voices = [s.strip() for s in (reader.str("preload_voices") or "").split(",") if s.strip()]
        self.torch_threads = reader.int("torch_threads", 0, min=0, max=1024)
        self.max_batch = reader.int("max_batch", 1, min=1, max=MAX_BATCH)
        self.batch_memory_mb = reader.int("batch_memory_mb", 0, min=0, max=10_000_000)
        self._tag = f"fish-{next(_instances)}"
        self._thread: Optional[InferenceThread] = None
        self._closed = False
        self._layout: Optional[CheckpointLayout] = None
        self._device: Any = None
        self._precision: Any = None
        self._codec: Any = None
        self._llm: Any = None
        self._prompts: Any = None
        self._cache: Any = None
        self._sample_rate = 44100
        self._jobs = 0
        self._scheduler: Any = None
        self._codec_lock = threading.Lock()  # batched mode uses the codec from two threads
        self._batch_info: dict[str, Any] = {}

    # ---- life cycle ------------------------------------------------------------------------------

    def load(self) -> EngineInfo:
        """Check the folder, load codec + LLM on the inference thread, optionally warm up."""
        if self._thread is not None or self._closed:
            raise EngineLoadError("engine fish-speech: load() may be called once per instance")
        for key, value in OFFLINE_ENV.items():
            os.environ[key] = value
        layout = detect_layout(self.checkpoint, self.expected_family)
        self._thread = InferenceThread(self._tag)
        try:
            info = self._thread.call(lambda: self._load_on_thread(layout))
        except EngineLoadError:
            self.close()
            raise
        except Exception as exc:  # anything from torch/hydra while loading is still a load failure
            self.close()
            raise EngineLoadError(
                f"engine fish-speech cannot load {layout.folder}: {type(exc).__name__}: {exc}"
            ) from exc
        return info

    def close(self) -> None:
        """Drop the models and free their memory (GPU cache too); idempotent."""
        if self._closed:
            return
        self._closed = True
        thread, self._thread = self._thread, None
        if thread is None:
            return
        if self._scheduler is not None:
            self._scheduler.close()
        try:
            thread.call(self._unload_on_thread, timeout_s=CLOSE_TIMEOUT_S)
        except Exception as exc:  # a hung job: leave the thread, the worker will recycle the process
            log.warning("[%s] unload did not finish cleanly: %s", self._tag, exc)
        thread.stop(timeout_s=5.0)

    # ---- jobs ------------------------------------------------------------------------------------

    def synthesize(self, request: SynthesisRequest, cancel: threading.Event) -> Iterator[AudioChunk]:
        """One chunk per generated segment; SynthesisCancelled between decode steps when `cancel` is set."""
        thread, layout = self._thread, self._layout
        if thread is None or layout is None:
            raise EngineError("engine fish-speech is not loaded", retryable=True)
        params = params_from_voice(request.voice, layout.family)
        text = request.text.strip()
        if not text:
            raise EngineError("text is empty")
        if self._scheduler is not None:
            yield from self._synthesize_batched(request, text, params, cancel)
            return
        stop = threading.Event()

        def check() -> None:
            if cancel.is_set() or stop.is_set():
                raise SynthesisCancelled(f"job {request.job_id} cancelled")

        started = time.monotonic()
        chunks = 0
        try:
            for audio in thread.iterate(lambda: self._run_job(request.job_id, text, request.speaker, params, check)):
                chunks += 1
                yield AudioChunk(float_to_int16(audio), self._sample_rate)
        finally:
            stop.set()  # a consumer that stops early also stops the generation
        log.info("[%s] job %s: %d segment(s) in %.2f s", self._tag, request.job_id, chunks,
                 time.monotonic() - started)

    def _synthesize_batched(self, request: SynthesisRequest, text: str, params: GenerationParams,
                            cancel: threading.Event) -> Iterator[AudioChunk]:
        from tts_worker.engines.fish_speech.batch import BatchJob

        job = BatchJob(job_id=request.job_id, text=text, speaker=request.speaker, params=params,
                       seed=params.job_seed(), cancel=cancel)
        started = time.monotonic()
        chunks = 0
        try:
            for audio in self._scheduler.run(job):
                chunks += 1
                yield AudioChunk(float_to_int16(audio), self._sample_rate)
        finally:
            job.stop.set()  # a consumer that stops early leaves the batch at the next step
        log.info("[%s] job %s: %d segment(s) in %.2f s (batched)", self._tag, request.job_id, chunks,
                 time.monotonic() - started)

    def deterministic(self, request: SynthesisRequest) -> bool:
        """Sampling with a fixed seed repeats itself (on one device and precision); without one it does not."""
        return request.voice.get("seed") is not None

    def stats(self) -> dict[str, Any]:
        """Heartbeat figures: token cache counters, warm speakers, GPU memory."""
        if self._layout is None or self._closed:
            return {}
        from tts_worker.engines.fish_speech.device import gpu_memory_bytes

        stats: dict[str, Any] = {
            "family": self._layout.family.value,
            "device": str(self._device),
            "jobs": self._jobs,
            "gpu_mem_bytes": gpu_memory_bytes(self._device),
            "token_cache": self._cache is not None,
            "warm": self._prompts.warm() if self._prompts is not None else [],
            "references_encoded": self._prompts.encoded if self._prompts is not None else 0,
        }
        if self._cache is not None:
            stats.update(self._cache.stats())
        scheduler = self._scheduler
        if scheduler is not None:
            stats.update(self._batch_info)
            steps = scheduler.steps
            stats.update({"jobs": self._jobs + scheduler.jobs_done, "batch_rows": scheduler.active_rows(),
                          "batch_steps": steps, "batch_peak_rows": scheduler.peak_rows,
                          "batch_mean_rows": round(scheduler.row_steps / steps, 2) if steps else 0.0})
        return stats

    # ---- on the inference thread -----------------------------------------------------------------

    def _load_on_thread(self, layout: CheckpointLayout) -> EngineInfo:
        import torch
        from loguru import logger as upstream_logger

        from tts_worker.engines.fish_speech import codec, device, llm
        from tts_worker.engines.fish_speech.prompts import VoicePrompts
        from tts_worker.engines.fish_speech.token_cache import SemanticTokenCache, codec_fingerprint
        from tts_worker.engines.fish_speech.voices import VoiceLibrary

        # Upstream logs every generated segment (and its text) through loguru at DEBUG level.
        upstream_logger.disable("fish_speech")
        upstream_logger.disable("fish_speech_lib")
        started = time.monotonic()
        if self.torch_threads:
            torch.set_num_threads(self.torch_threads)
        self._device = device.pick_device(self.device_name)
        self._precision = device.pick_precision(self._device, self.precision_name)
        if self.compile and self._device.type != "cuda":
            raise EngineLoadError(f"engine fish-speech: compile=true needs a CUDA device, not {self._device}")
        config = codec.codec_config(layout)
        self._codec = codec.load_codec(layout, self._device, config)
        self._sample_rate = codec.codec_sample_rate(self._codec, layout.family)
        llm.check_llm(layout, codec.codebook_count(self._codec, layout.family))
        self._llm = llm.SemanticModel(layout, self._device, self._precision, self.compile)
        if self.token_cache:
            self._cache = SemanticTokenCache(max_entries=self.token_cache_entries, disk_dir=self.token_cache_dir)
            codec_sha = codec_fingerprint(layout.codec_weights, self.token_cache_dir)
        else:
            codec_sha = "uncached"
        self._prompts = VoicePrompts(
            VoiceLibrary(self.voices_dir), self._cache, self._encode_reference, family=layout.family.value,
            codec_sha256=codec_sha, sample_rate=self._sample_rate, max_reference_s=self.max_reference_s,
        )
        self._layout = layout
        if self.max_batch > 1:
            self._setup_batching(layout)
        self._preload()
        if self.warmup:
            warm_started = time.monotonic()
            params = GenerationParams(seed=0, temperature=0.7, top_p=0.7, repetition_penalty=1.2,
                                      max_new_tokens=32, chunk_length=200)
            if self._scheduler is not None:
                from tts_worker.engines.fish_speech.batch import BatchJob

                self._scheduler.run_here(BatchJob("warm-up", WARMUP_TEXT, None, params, 0, threading.Event()))
            else:
                for _ in self._run_job("warm-up", WARMUP_TEXT, None, params, lambda: None):
                    pass
            log.info("[%s] warm-up took %.2f s", self._tag, time.monotonic() - warm_started)
        from tts_worker.engines.fish_speech.device import PRECISION_NAMES

        log.info("[%s] %s loaded from %s on %s (%s) in %.2f s", self._tag, layout.family.display_name, layout.folder,
                 self._device, PRECISION_NAMES[self._precision], time.monotonic() - started)
        return EngineInfo(
            engine=self.name,
            model=layout.family.value,
            sample_rate=self._sample_rate,
            device=str(self._device),
            licence=LICENCE,
            capacity=self._batch_info.get("max_batch_effective", 1),
            extra={"checkpoint": str(layout.folder), "precision": PRECISION_NAMES[self._precision],
                   "compile": self.compile, "voices_dir": str(self.voices_dir), **self._batch_info},
        )

    def _setup_batching(self, layout: CheckpointLayout) -> None:
        """Size the batch to the memory there is, allocate its KV caches, start the scheduler."""
        import torch

        from tts_worker.engines.fish_speech.batch import BatchScheduler, PromptBuilder
        from tts_worker.engines.fish_speech.batch_model import BatchModel, CacheShape

        model = self._llm.model
        for layer in (*model.layers, *model.fast_layers):
            layer.attention.kv_cache = None  # upstream's batch-1 caches: the batched loop has its own
        gc.collect()
        per_row = CacheShape.of(model).bytes_per_row
        if self.batch_memory_mb:
            budget, source = self.batch_memory_mb * 2**20, "batch_memory_mb"
        elif self._device.type == "cuda":
            free, _total = torch.cuda.mem_get_info(self._device)
            budget, source = int(free * BATCH_MEMORY_SHARE["cuda"]), "free GPU memory"
        else:
            import psutil

            budget, source = int(psutil.virtual_memory().available * BATCH_MEMORY_SHARE["cpu"]), "available RAM"
        effective = max(1, min(self.max_batch, budget // per_row))
        if effective < self.max_batch:
            log.warning("[%s] max_batch=%d capped to %d: %d KV-cache bytes per row, budget %d bytes (%s)",
                        self._tag, self.max_batch, effective, per_row, budget, source)
        batch_model = BatchModel(model, layout.family, effective, self._device)
        if self.compile:  # one shape: every step attends over the whole cache
            batch_model.fixed_span = True
            batch_model.step_fn = torch.compile(batch_model.step_fn, dynamic=False)
        assert self._thread is not None
        self._scheduler = BatchScheduler(
            model=batch_model, builder=PromptBuilder(layout.family, model), post=self._thread.post,
            prompt_for=self._prompts.prompt, decode=self._decode, device=self._device, tag=self._tag)
        self._batch_info = {"max_batch": self.max_batch, "max_batch_effective": effective,
                            "kv_bytes_per_row": per_row, "kv_bytes": batch_model.kv_bytes,
                            "kv_budget_bytes": budget}
        log.info("[%s] batched decoding: %d row(s), %.1f MiB of KV cache per row", self._tag, effective,
                 per_row / 2**20)

    def _preload(self) -> None:
        if not self.preload_voices:
            return
        speakers = self._prompts.library.speakers() if self.preload_voices == ["*"] else self.preload_voices
        for speaker in speakers:
            try:
                self._prompts.prompt(speaker)
            except EngineError as exc:
                raise EngineLoadError(f"engine fish-speech: preloading voice {speaker!r} failed: {exc}") from exc
        log.info("[%s] preloaded %d voice(s)", self._tag, len(speakers))

    def _encode_reference(self, audio: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            audios = torch.from_numpy(audio).to(self._device)[None, None, :]
            lengths = torch.tensor([audios.shape[2]], device=self._device, dtype=torch.long)
            try:
                with self._codec_lock:  # the batch's codec thread may be decoding
                    indices = self._codec.encode(audios, lengths)[0][0]
            except RuntimeError as exc:
                raise EngineError(f"reference audio could not be encoded: {exc}") from exc
        return indices.to("cpu").numpy()

    def _decode(self, codes: Any) -> np.ndarray:
        import torch

        indices = codes.to(self._device)
        lengths = torch.tensor([indices.shape[1]], device=self._device)
        half = self._device.type == "cuda" and self._precision != torch.float32
        context = torch.autocast(device_type="cuda", dtype=self._precision) if half else nullcontext()
        with context, self._codec_lock:
            audio, _ = self._codec.decode(indices=indices[None], feature_lengths=lengths)
        return audio[0].squeeze().float().cpu().numpy()

    def _run_job(self, job_id: str, text: str, speaker: Optional[str], params: GenerationParams,
                 check: Any) -> Iterator[np.ndarray]:
        import torch

        from tts_worker.engines.fish_speech.device import release_cached_memory

        assert self._prompts is not None and self._llm is not None
        prompt = self._prompts.prompt(speaker)
        prompt_tokens = [torch.from_numpy(np.ascontiguousarray(c, dtype=np.int32)) for c in prompt.codes]
        seed = params.job_seed()
        log.debug("[%s] job %s: seed %d, %d reference(s)", self._tag, job_id, seed, len(prompt_tokens))
        produced = 0
        try:
            with torch.inference_mode():
                for codes in self._llm.generate(text, prompt.texts, prompt_tokens, params, seed, check):
                    check()
                    if codes.shape[1] == 0:
                        continue
                    produced += 1
                    yield self._decode(codes)
        except (SynthesisCancelled, EngineError):
            raise
        except torch.cuda.OutOfMemoryError as exc:
            raise EngineError(f"GPU out of memory: {exc}", retryable=True) from exc
        except (AssertionError, ValueError) as exc:  # upstream checks (prompt too long, bad sampling args)
            raise EngineError(f"fish-speech rejected the job: {exc}") from exc
        finally:
            release_cached_memory(self._device)
        if job_id != "warm-up":
            self._jobs += 1
        if produced == 0:
            raise EngineError("the model generated no audio for this text")

    def _unload_on_thread(self) -> None:
        if self._scheduler is not None:
            self._scheduler.codec.stop()
            self._scheduler.model.close()
        if self._llm is not None:
            self._llm.close()
        if self._cache is not None:
            self._cache.clear_memory()
        self._llm = self._codec = self._prompts = None
        self._layout = None
        gc.collect()
        if self._device is not None:
            from tts_worker.engines.fish_speech.device import release_cached_memory

            release_cached_memory(self._device)
