"""What was said and when: recognition (for the word error rate) and forced alignment with pocketsphinx 5.

Both run on 16 kHz audio with the US English model pocketsphinx ships. One Decoder per process (loading the
model costs about half a second); the aligner switches the decoder to alignment mode, so recognition activates
the language-model search again first.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Iterable, Optional

import numpy as np

RATE = 16000
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")
_decoder: Any = None
_lm_search: Optional[str] = None
_lm_path: Optional[str] = None


def use_language_model(path: Optional[str]) -> None:
    """Recognise with the ARPA model at `path` (None: pocketsphinx's general US English model)."""
    global _lm_path, _decoder
    _lm_path, _decoder = path, None


def script_language_model(sentences: Iterable[str], path: str) -> None:
    """Write a trigram ARPA model of the script's own sentences (pocketsphinx.lm) to `path`.

    Recognising with the script's words instead of the general model's 130,000 is about 4x faster and does not
    mishear clean speech as near-homophones; audio that does not say its line still scores badly (tones and
    noise are heard as nothing, another line as that line's words).
    """
    from pocketsphinx.lm import ArpaBoLM

    model = ArpaBoLM(text="\n".join(" ".join(words_of(s)) for s in sentences), add_start=True)
    model.compute()
    model.write_file(path)


@dataclasses.dataclass(frozen=True, slots=True)
class Word:
    """A word of the line's text and where it is in the audio (seconds from the file's start)."""

    word: str
    start_s: float
    end_s: float


_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
         "seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> list[str]:
    """0 <= n < 10**12 as spoken English words (the recogniser hears "thirty", not "30")."""
    if n < 20:
        return [_ONES[n]]
    if n < 100:
        return [_TENS[n // 10]] + ([_ONES[n % 10]] if n % 10 else [])
    if n < 1000:
        return [_ONES[n // 100], "hundred"] + (number_words(n % 100) if n % 100 else [])
    for size, name in ((10**9, "billion"), (10**6, "million"), (1000, "thousand")):
        if n >= size:
            return number_words(n // size) + [name] + (number_words(n % size) if n % size else [])
    return [str(n)]


def words_of(text: str) -> list[str]:
    """The text as lower-case words without punctuation, numbers spelt out (what is compared and aligned)."""
    words: list[str] = []
    for word in _WORD.findall(text.lower().replace("\u2019", "'")):
        if word.isdigit() and len(word) <= 12:
            words.extend(number_words(int(word)))
        else:
            words.append(word)
    return words


def _get_decoder() -> Any:
    global _decoder, _lm_search
    if _decoder is None:
        import pocketsphinx

        _decoder = pocketsphinx.Decoder(loglevel="FATAL", **({"lm": _lm_path} if _lm_path else {}))
        _lm_search = _decoder.current_search()
    return _decoder


def _pcm16(x: np.ndarray) -> bytes:
    return bytes(np.clip(np.round(x * 32767), -32768, 32767).astype("<i2").tobytes())


def recognise(x16k: np.ndarray) -> list[str]:
    """Words the recogniser hears in float audio at 16 kHz."""
    decoder = _get_decoder()
    decoder.activate_search(_lm_search)
    decoder.start_utt()
    decoder.process_raw(_pcm16(x16k), full_utt=True)
    decoder.end_utt()
    hyp = decoder.hyp()
    return words_of(hyp.hypstr) if hyp is not None else []


def word_error_rate(reference: list[str], heard: list[str]) -> float:
    """(substitutions + deletions + insertions) / reference words (Levenshtein over words)."""
    if not reference:
        return 0.0 if not heard else 1.0
    row = list(range(len(heard) + 1))
    for i, ref in enumerate(reference, 1):
        prev, row[0] = row[:], i
        for j, hyp in enumerate(heard, 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (ref != hyp))
    return row[-1] / len(reference)


def align(x16k: np.ndarray, text: str) -> tuple[list[Word], str]:
    """Each word of `text` with start and end (seconds), in text order, and how they were found.

    Words the dictionary lacks cannot be aligned: they take the gap between their aligned neighbours. If the
    aligner finds no path at all, the words share the audio's span evenly, and the method says "even" instead
    of "pocketsphinx".
    """
    decoder = _get_decoder()
    words = words_of(text)
    if not words:
        return [], "pocketsphinx"
    in_dict = [decoder.lookup_word(w) is not None for w in words]
    known = [w for w, ok in zip(words, in_dict, strict=True) if ok]
    timed: list[tuple[str, float, float]] = []
    if known:
        try:
            decoder.set_align_text(" ".join(known))
            decoder.start_utt()
            decoder.process_raw(_pcm16(x16k), full_utt=True)
            decoder.end_utt()
            timed = [(re.sub(r"\(\d+\)$", "", s.word), s.start_frame / 100, (s.end_frame + 1) / 100)
                     for s in (decoder.seg() or ()) if not s.word.startswith(("<", "["))]
        except RuntimeError:
            timed = []
    duration = len(x16k) / RATE
    if not known or [t[0] for t in timed] != known:
        step = duration / len(words)
        return [Word(w, round(i * step, 3), round((i + 1) * step, 3)) for i, w in enumerate(words)], "even"
    out: list[Word] = []
    aligned = iter(timed)
    pending: list[str] = []
    last_end = 0.0
    for w, ok in zip(words, in_dict, strict=True):
        if not ok:
            pending.append(w)
            continue
        _, start, end = next(aligned)
        end = min(end, duration)
        out.extend(Word(p, round(last_end, 3), round(start, 3)) for p in pending)
        pending = []
        out.append(Word(w, round(start, 3), round(end, 3)))
        last_end = end
    out.extend(Word(p, round(last_end, 3), round(duration, 3)) for p in pending)
    return out, "pocketsphinx"
