"""Sound post-processing of one line: resample, trim silence to a pad, loudness to a target, true-peak limit.

Loudness is ITU-R BS.1770-4 integrated loudness measured by pyloudnorm; true peak is the peak of the signal
oversampled (scipy's polyphase resampler), as BS.1770 annex 2 describes. The limiter is a look-ahead gain
envelope: the gain each sample needs, a running minimum over the look-ahead window, then a moving average no
wider than that window, so the smoothed gain never exceeds what any sample needs.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

TRUE_PEAK_OVERSAMPLE = 4
FRAME_S = 0.010
LIMITER_LOOKAHEAD_S = 0.005
SILENCE_RELATIVE_DB = 45.0  # quieter than the loudest 10 ms by this much is silence
SILENCE_FLOOR_DBFS = -65.0  # and never louder than this counts as silence


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """float64 mono audio at rate_out (scipy resample_poly with the reduced ratio)."""
    if rate_in == rate_out or len(x) == 0:
        return x
    from scipy.signal import resample_poly

    ratio = Fraction(rate_out, rate_in)
    return np.asarray(resample_poly(x, ratio.numerator, ratio.denominator), dtype=np.float64)


def true_peak_envelope(x: np.ndarray, oversample: int = TRUE_PEAK_OVERSAMPLE) -> np.ndarray:
    """Per sample, the largest magnitude of the oversampled signal from that sample to the next."""
    from scipy.signal import resample_poly

    if len(x) == 0:
        return np.zeros(0)
    up = np.abs(resample_poly(x, oversample, 1))[: len(x) * oversample]
    up = np.pad(up, (0, len(x) * oversample - len(up)))
    return np.maximum(up.reshape(len(x), oversample).max(axis=1), np.abs(x))


def true_peak_db(x: np.ndarray) -> float:
    """True peak in dBTP (dB relative to full scale, oversampled); -inf for silence."""
    peak = float(true_peak_envelope(x).max()) if len(x) else 0.0
    return 20 * math.log10(peak) if peak > 0 else -math.inf


def integrated_lufs(x: np.ndarray, rate: int) -> float:
    """BS.1770 integrated loudness (pyloudnorm); a line shorter than the 400 ms block is measured as one block."""
    import pyloudnorm

    block = min(0.400, len(x) / rate) if len(x) else 0.400
    if len(x) == 0 or block <= 0.05:
        return -math.inf
    meter = pyloudnorm.Meter(rate, block_size=block)
    return float(meter.integrated_loudness(x))


def frame_db(x: np.ndarray, rate: int) -> np.ndarray:
    """RMS level in dBFS of consecutive 10 ms frames."""
    n = max(1, int(rate * FRAME_S))
    frames = len(x) // n
    if frames == 0:
        return np.full(1, -math.inf if not len(x) else 20 * math.log10(max(1e-12, float(np.sqrt(np.mean(x**2))))))
    rms = np.sqrt(np.mean(x[: frames * n].reshape(frames, n) ** 2, axis=1))
    return 20 * np.log10(np.maximum(rms, 1e-12))


def speech_bounds(x: np.ndarray, rate: int) -> tuple[int, int] | None:
    """(first, last) sample of the part that is not silence; None if the whole line is silent."""
    levels = frame_db(x, rate)
    loudest = float(levels.max())
    if loudest < SILENCE_FLOOR_DBFS:
        return None
    threshold = max(loudest - SILENCE_RELATIVE_DB, SILENCE_FLOOR_DBFS)
    loud = np.flatnonzero(levels > threshold)
    n = max(1, int(rate * FRAME_S))
    return int(loud[0]) * n, min(len(x), (int(loud[-1]) + 1) * n)


def trim(x: np.ndarray, rate: int, pad_ms: float) -> np.ndarray:
    """Head and tail silence cut (or padded with silence) to exactly pad_ms around the speech; never into it."""
    bounds = speech_bounds(x, rate)
    if bounds is None:
        return x
    pad = int(round(rate * pad_ms / 1000))
    start, end = bounds
    head = x[max(0, start - pad): start]
    tail = x[end: end + pad]
    fade = min(int(rate * 0.005), len(head), len(tail))
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        head = head.copy()
        tail = tail.copy()
        head[:fade] *= ramp  # the cut lands in near-silence; a 5 ms ramp keeps it click-free
        tail[-fade:] *= ramp[::-1]
    return np.concatenate([np.zeros(pad - len(head)), head, x[start:end], tail, np.zeros(pad - len(tail))])


def limit(x: np.ndarray, rate: int, ceiling_db: float) -> np.ndarray:
    """Keep the true peak at or under ceiling_db with a look-ahead gain envelope (see the module docstring)."""
    from scipy.ndimage import minimum_filter1d, uniform_filter1d

    ceiling = 10 ** (ceiling_db / 20)
    for _ in range(4):
        envelope = true_peak_envelope(x)
        if len(x) == 0 or envelope.max() <= ceiling:
            return x
        need = np.minimum(1.0, ceiling / np.maximum(envelope, 1e-12))
        half = max(1, int(rate * LIMITER_LOOKAHEAD_S))
        gain = minimum_filter1d(need, size=2 * half + 1, mode="nearest")
        gain = uniform_filter1d(gain, size=half + 1, mode="nearest")
        x = x * np.minimum(gain, need)
        ceiling_left = ceiling / max(1e-12, float(true_peak_envelope(x).max()))
        if ceiling_left >= 1.0:
            return x
        x = x * ceiling_left  # inter-sample overs the envelope could not see: a last plain gain
    return x


def conform(x: np.ndarray, rate: int, *, lufs: float, true_peak_db_max: float) -> np.ndarray:
    """Integrated loudness to `lufs`, then the true-peak limit; repeated while the limiter pulled it down."""
    for _ in range(5):
        measured = integrated_lufs(x, rate)
        if not math.isfinite(measured):
            return x
        x = x * 10 ** ((lufs - measured) / 20)
        x = limit(x, rate, true_peak_db_max)
        if abs(integrated_lufs(x, rate) - lufs) < 0.1:
            break
    return x
