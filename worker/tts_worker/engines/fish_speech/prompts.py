"""A speaker name -> the prompt the LLM is conditioned on (transcripts + reference codes).

Speaker None or "default" means no reference (the model's own voice). Any other name must be a folder in the
voice library, else EngineError: there is never a silent fallback to a default voice. Encoded references go
through the SemanticTokenCache; `warm()` lists speakers whose codes are all in memory (heartbeats carry it
so the broker can route a speaker's jobs to a worker that has it warm).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Callable, Optional

import numpy as np

from tts_worker.engines.checksum import file_sha256
from tts_worker.engines.fish_speech.token_cache import SemanticTokenCache, cache_key
from tts_worker.engines.fish_speech.voices import (
    DEFAULT_SPEAKERS,
    ReferenceFile,
    VoiceLibrary,
    decode_reference,
)

log = logging.getLogger(__name__)

MAX_WARM = 256

Encoder = Callable[[np.ndarray], np.ndarray]  # float32 mono at the codec rate -> int codes (codebooks, T)


@dataclasses.dataclass(frozen=True, slots=True)
class _Entry:
    key: str
    transcript: str
    audio_sha256: str


@dataclasses.dataclass(frozen=True, slots=True)
class Prompt:
    """What a job is conditioned on; empty for the default voice."""

    texts: tuple[str, ...] = ()
    codes: tuple[np.ndarray, ...] = ()


class VoicePrompts:
    """Resolves speakers to prompts, encoding each reference clip at most once per cache lifetime."""

    def __init__(self, library: VoiceLibrary, cache: Optional[SemanticTokenCache], encode: Encoder, *,
                 family: str, codec_sha256: str, sample_rate: int, max_reference_s: float) -> None:
        self.library = library
        self.cache = cache
        self.encode = encode
        self.family = family
        self.codec_sha256 = codec_sha256
        self.sample_rate = sample_rate
        self.max_reference_s = max_reference_s
        self._index: dict[str, tuple[tuple[tuple[str, int, int], ...], tuple[_Entry, ...]]] = {}
        self._lock = threading.Lock()
        self.encoded = 0

    def prompt(self, speaker: Optional[str]) -> Prompt:
        if speaker is None or speaker in DEFAULT_SPEAKERS:
            return Prompt()
        refs = self.library.references(speaker)
        entries = self._entries(speaker, refs)
        texts, codes = [], []
        for entry, ref in zip(entries, refs, strict=True):
            texts.append(entry.transcript)
            codes.append(self._codes(speaker, entry, ref))
        return Prompt(tuple(texts), tuple(codes))

    def warm(self) -> list[str]:
        """Speakers whose reference codes are all in memory right now (at most 256)."""
        if self.cache is None:
            return []
        with self._lock:
            index = list(self._index.items())
        warm = [speaker for speaker, (_, entries) in index
                if entries and all(self.cache.in_memory(e.key) for e in entries)]
        return sorted(warm)[:MAX_WARM]

    def _entries(self, speaker: str, refs: list[ReferenceFile]) -> tuple[_Entry, ...]:
        # Re-hash a clip only when its size or mtime changed: a warm speaker costs a few stat() calls.
        signature = tuple((str(r.audio_path), r.size, r.mtime_ns) for r in refs)
        with self._lock:
            known = self._index.get(speaker)
        transcripts = tuple(r.transcript for r in refs)
        if known is not None and known[0] == signature and tuple(e.transcript for e in known[1]) == transcripts:
            return known[1]
        entries = []
        for ref in refs:
            audio_sha = file_sha256(ref.audio_path)
            key = cache_key(self.family, self.codec_sha256, audio_sha, ref.transcript)
            entries.append(_Entry(key, ref.transcript, audio_sha))
        result = tuple(entries)
        with self._lock:
            self._index[speaker] = (signature, result)
        return result

    def _codes(self, speaker: str, entry: _Entry, ref: ReferenceFile) -> np.ndarray:
        meta = {"family": self.family, "codec_sha256": self.codec_sha256, "audio_sha256": entry.audio_sha256,
                "transcript": entry.transcript}
        if self.cache is not None:
            cached = self.cache.get(entry.key, meta)
            if cached is not None:
                return cached
        audio = decode_reference(ref.audio_path, self.sample_rate, self.max_reference_s)
        codes = np.ascontiguousarray(self.encode(audio), dtype=np.int32)
        self.encoded += 1
        log.info("encoded reference %s/%s: %d codebooks x %d frames", speaker, ref.audio_path.name,
                 codes.shape[0], codes.shape[1])
        if self.cache is not None:
            self.cache.put(entry.key, codes, meta)
        return codes
