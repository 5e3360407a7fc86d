"""A speech response body as whole 16-bit samples: odd bytes carried over, a WAV header checked and dropped.

We ask for `response_format: pcm`, but some servers answer WAV anyway (or only stream WAV). A body that opens
with a RIFF/WAVE header is accepted when it says what the worker announced (mono, 16-bit PCM, `sample_rate`),
and its header is dropped; one that says otherwise is refused with the figures to set.
"""

from __future__ import annotations

import struct
from typing import Optional

MAX_HEADER = 4096  # a WAV header with its extra chunks (LIST, fact) fits well inside this


class WavMismatch(Exception):
    """The server's WAV is not what the worker announced."""


class PcmBody:
    """Feed the body's pieces in order; get back even-length PCM (possibly empty)."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self._head: Optional[bytearray] = bytearray()  # None once we know where the samples start
        self._carry = b""
        self.wav = False

    def feed(self, data: bytes) -> bytes:
        if self._head is not None:
            self._head += data
            if len(self._head) < 12 and b"RIFF".startswith(bytes(self._head[:4])):
                return b""  # too short to tell yet
            if self._head[:4] != b"RIFF":
                data, self._head = bytes(self._head), None
            else:
                start = self._wav_data_start()
                if start is None:
                    if len(self._head) > MAX_HEADER:
                        raise WavMismatch("the server's WAV header has no data chunk in its first 4 KiB")
                    return b""
                data, self._head = bytes(self._head[start:]), None
        data = self._carry + data
        even = len(data) - len(data) % 2
        self._carry = data[even:]
        return data[:even]

    def _wav_data_start(self) -> Optional[int]:
        head = bytes(self._head or b"")
        if head[8:12] != b"WAVE":
            raise WavMismatch("the server's body starts with RIFF but is not WAVE")
        pos, fmt = 12, None
        while pos + 8 <= len(head):
            chunk, size = head[pos:pos + 4], struct.unpack("<I", head[pos + 4:pos + 8])[0]
            if chunk == b"data":
                if fmt is None:
                    raise WavMismatch("the server's WAV has no fmt chunk before its data")
                self.wav = True
                return pos + 8
            if chunk == b"fmt ":
                if pos + 24 > len(head):
                    return None
                tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", head[pos + 8:pos + 24])
                if tag not in (1, 0xFFFE) or bits != 16 or channels != 1 or rate != self.sample_rate:
                    raise WavMismatch(f"the server sends WAV (format {tag}, {channels} channel(s), {bits}-bit, "
                                      f"{rate} Hz) but this worker announced 16-bit mono at {self.sample_rate} Hz:"
                                      f" set sample_rate={rate} (and a mono 16-bit voice)")
                fmt = (channels, rate, bits)
            pos += 8 + size + (size % 2)
        return None

    def leftover(self) -> int:
        """Bytes held back at the end (an odd byte, or a header that never finished)."""
        return len(self._carry) + (len(self._head) if self._head is not None else 0)
