"""Device and precision choice for the Fish engine (AUDIO_DEVICE, --engine-opt device/precision)."""

from __future__ import annotations

import torch

from tts_worker.engines.base import EngineLoadError

_PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
PRECISION_NAMES = {v: k for k, v in _PRECISIONS.items()}


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def pick_device(requested: str) -> torch.device:
    """auto -> cuda, then mps, then cpu; an explicit device that is absent is a load error, not a fallback."""
    text = requested.strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", 0)
        if mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError) as exc:
        raise EngineLoadError(f"device {requested!r} is not a torch device (auto, cpu, cuda, cuda:N, mps)") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise EngineLoadError(f"device {requested!r} asked for, but this torch sees no CUDA GPU")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise EngineLoadError(f"device {requested!r}: only {torch.cuda.device_count()} CUDA device(s)")
        return torch.device("cuda", index)
    if device.type == "mps":
        if not mps_available():
            raise EngineLoadError(f"device {requested!r} asked for, but MPS is not available")
        return torch.device("mps")
    if device.type == "cpu":
        return torch.device("cpu")
    raise EngineLoadError(f"device {requested!r} is not supported (auto, cpu, cuda, cuda:N, mps)")


def pick_precision(device: torch.device, requested: str) -> torch.dtype:
    """auto: bf16 on a GPU that supports it, else fp16 on GPU, fp32 on CPU."""
    text = requested.strip().lower()
    if text != "auto":
        if text not in _PRECISIONS:
            raise EngineLoadError(f"precision {requested!r} is not one of auto, bf16, fp16, fp32")
        dtype = _PRECISIONS[text]
        if device.type == "cpu" and dtype is torch.float16:
            raise EngineLoadError("precision fp16 is not supported on cpu (use fp32 or bf16)")
        return dtype
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def gpu_memory_bytes(device: torch.device) -> int:
    """Memory the caching allocator holds on the engine's GPU; 0 on CPU."""
    try:
        if device.type == "cuda":
            return int(torch.cuda.memory_reserved(device))
        if device.type == "mps":
            return int(torch.mps.current_allocated_memory())
    except Exception:  # stats are best effort; a driver hiccup must not break heartbeats
        return 0
    return 0


def release_cached_memory(device: torch.device) -> None:
    """Give cached GPU blocks back after a job (long-running servers otherwise grow)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()
