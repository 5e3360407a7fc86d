"""Witnesses of the journal: files outside it that remember how far it got, so a journal that lost data is noticed.

A witness holds one fixed-size record, the journal's `generation` and `seq` (the number of its last commit),
at a fixed offset of a file kept open for the broker's life. After every commit the record is overwritten
in place with one `pwrite`: no rename, no fsync, a few microseconds. A record is plain ASCII,

    tts-witness 1 <generation, 32 wide> <seq, 20 digits> <crc32 of what precedes, 8 hex>\\n

so `cat` shows it, and a torn or garbled one (power lost mid-write, a stray edit) fails its checksum: it is
then treated as absent, and said so once in the log. Absent means "this witness knows nothing", never a loss.

The journal keeps two (journal.py): `<journal>.seq` beside it, and the state dir's `broker.lock` after the
pid (statedir.PID_BYTES), which survives the journal's folder being lost or the journal and its `.seq`
being deleted together.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import zlib
from pathlib import Path
from typing import Iterable, Optional

log = logging.getLogger(__name__)

_MAGIC = b"tts-witness 1 "
GENERATION_BYTES = 32
_SEQ_DIGITS = 20
RECORD_BYTES = len(_MAGIC) + GENERATION_BYTES + 1 + _SEQ_DIGITS + 1 + 8 + 1  # 77


class WitnessGarbled(ValueError):
    """A record that is there but does not read back: torn, edited, or of another format."""


@dataclasses.dataclass(frozen=True, slots=True)
class Mark:
    """What a witness says: the journal of `generation` reached commit `seq`."""

    generation: str
    seq: int


def encode(mark: Mark) -> bytes:
    """The fixed-size record for `mark`."""
    gen = mark.generation.encode("ascii")
    if not gen or len(gen) > GENERATION_BYTES or not gen.isalnum():
        raise ValueError(f"generation {mark.generation!r} is not 1-{GENERATION_BYTES} ASCII letters and digits")
    if not 0 <= mark.seq < 10 ** _SEQ_DIGITS:
        raise ValueError(f"seq {mark.seq} out of range")
    body = _MAGIC + gen.ljust(GENERATION_BYTES) + b" " + str(mark.seq).zfill(_SEQ_DIGITS).encode() + b" "
    return body + f"{zlib.crc32(body):08x}\n".encode()


def decode(data: bytes) -> Optional[Mark]:
    """The mark in `data` (the bytes at a witness's offset), None when there is none; raises WitnessGarbled."""
    if not data.strip(b"\0 \n"):
        return None  # never written (a lock file of an older broker holds only the pid)
    if data.lstrip().startswith(b"{"):
        return _decode_legacy(data)
    record = data[:RECORD_BYTES]
    if len(record) < RECORD_BYTES or not record.startswith(_MAGIC):
        raise WitnessGarbled(f"not a witness record: {bytes(record[:24])!r}...")
    body, crc = record[:-9], record[-9:-1]
    try:
        if int(crc, 16) != zlib.crc32(body) or record[-1:] != b"\n":
            raise WitnessGarbled("checksum does not match (torn or edited)")
        fields = body[len(_MAGIC):].split()
        generation, seq = fields[0].decode("ascii"), int(fields[1])
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise WitnessGarbled(f"unreadable record ({exc})") from exc
    return Mark(generation, seq)


def _decode_legacy(data: bytes) -> Mark:
    """The JSON side file that versions before per-commit witnesses wrote (replaced at the first write)."""
    try:
        parsed = json.loads(data.split(b"\0", 1)[0].decode("utf-8"))
        return Mark(str(parsed["generation"]), int(parsed["seq"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise WitnessGarbled(f"unreadable JSON ({exc})") from exc


class WitnessFile:
    """One witness: a record at `offset` of `path`, read once at start and rewritten in place after commits."""

    def __init__(self, path: Path, *, offset: int = 0) -> None:
        self.path = path
        self.offset = offset
        self._fd: Optional[int] = None
        self._failing = False  # a write failed and was logged; the next success is logged too

    def read(self) -> Optional[Mark]:
        """The mark this witness holds; None when it holds none or a garbled one (logged)."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read(4096)
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("journal witness %s unreadable (%s); loss detection does without it this start",
                        self.path, exc)
            return None
        try:
            return decode(data)
        except WitnessGarbled as exc:
            log.warning("journal witness %s is garbled (%s); ignored, it is rewritten at the next commit",
                        self.path, exc)
            return None

    def write(self, record: bytes) -> None:
        """Overwrite the record in place (opening the file the first time); a failure is logged once."""
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                if os.fstat(self._fd).st_size > self.offset + RECORD_BYTES:  # a longer (JSON) record of old
                    os.ftruncate(self._fd, self.offset + RECORD_BYTES)
            os.pwrite(self._fd, record, self.offset)
        except OSError as exc:  # it lags behind: the journal itself is fine, the next start may miss a loss
            if not self._failing:
                self._failing = True
                log.warning("journal witness %s not written (%s); retried at every commit", self.path, exc)
            return
        if self._failing:
            self._failing = False
            log.info("journal witness %s written again", self.path)

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


class Witnesses:
    """The journal's witnesses together: the best one at start, all of them made current after each commit."""

    def __init__(self, files: Iterable[WitnessFile]) -> None:
        self.files = list(files)

    def read(self) -> list[tuple[WitnessFile, Optional[Mark]]]:
        """Each witness and what it says (None: nothing, or nothing readable)."""
        return [(file, file.read()) for file in self.files]

    def write(self, mark: Mark) -> None:
        record = encode(mark)
        for file in self.files:
            file.write(record)

    def close(self) -> None:
        for file in self.files:
            file.close()


def best(said: Iterable[tuple[WitnessFile, Optional[Mark]]]) -> Optional[tuple[WitnessFile, Mark]]:
    """The witness that saw the most commits (the first of equals), or None when none says anything."""
    found: Optional[tuple[WitnessFile, Mark]] = None
    for file, mark in said:
        if mark is not None and (found is None or mark.seq > found[1].seq):
            found = (file, mark)
    return found
