"""Journal witnesses on real files: the record, in-place rewrites, torn and legacy records, the lock file's layout."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from tts_broker.journal_witness import RECORD_BYTES, Mark, Witnesses, WitnessFile, WitnessGarbled, best, decode, encode
from tts_broker.statedir import LOCK_NAME, PID_BYTES, StateLock, read_pid

pytestmark = [pytest.mark.unit, pytest.mark.timeout(20)]


def test_a_record_is_fixed_size_readable_text_and_reads_back() -> None:
    for mark in (Mark("0123456789abcdef", 0), Mark("a" * 32, 10 ** 20 - 1), Mark("x", 7)):
        record = encode(mark)
        assert len(record) == RECORD_BYTES and record.endswith(b"\n")
        assert record.startswith(b"tts-witness 1 " + mark.generation.encode())
        assert decode(record) == mark
        assert decode(record + b"trailing bytes are not read") == mark
    with pytest.raises(ValueError):
        encode(Mark("has space", 1))
    with pytest.raises(ValueError):
        encode(Mark("g", -1))


def test_a_torn_or_edited_record_is_garbled_and_nothing_is_absent() -> None:
    record = encode(Mark("0123456789abcdef", 41))
    assert decode(b"") is None and decode(b"\0" * 100) is None and decode(b"   \n") is None
    edited = record.replace(b"41 ", b"42 ")  # the seq field
    with pytest.raises(WitnessGarbled, match="checksum"):
        decode(edited)
    with pytest.raises(WitnessGarbled):
        decode(record[:40])  # torn: the first half of a write
    torn = encode(Mark("fedcba9876543210", 99))[:50] + record[50:]  # the new record's start over the old one's end
    with pytest.raises(WitnessGarbled):
        decode(torn)
    with pytest.raises(WitnessGarbled):
        decode(b"12345\nsomething else entirely")


def test_the_json_side_file_of_older_versions_is_read_and_replaced(tmp_path: Path) -> None:
    side = tmp_path / "journal.sqlite3.seq"
    side.write_text(json.dumps({"generation": "0123456789abcdef", "seq": 1234567}) + " " * 200)
    witness = WitnessFile(side)
    assert witness.read() == Mark("0123456789abcdef", 1234567)
    witness.write(encode(Mark("0123456789abcdef", 1234568)))
    witness.close()
    assert side.stat().st_size == RECORD_BYTES  # the longer JSON is gone, not left after the record
    assert WitnessFile(side).read() == Mark("0123456789abcdef", 1234568)


def test_rewrites_are_in_place_and_keep_what_precedes_the_offset(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_bytes(b"P" * PID_BYTES)
    witness = WitnessFile(path, offset=PID_BYTES)
    inode = path.stat().st_ino
    for seq in range(1, 50):
        witness.write(encode(Mark("abc", seq)))
    witness.close()
    assert path.stat().st_ino == inode and path.stat().st_size == PID_BYTES + RECORD_BYTES
    assert path.read_bytes()[:PID_BYTES] == b"P" * PID_BYTES
    assert WitnessFile(path, offset=PID_BYTES).read() == Mark("abc", 49)


def test_a_garbled_witness_is_absent_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "w"
    path.write_bytes(encode(Mark("abc", 5))[:-3] + b"zz\n")
    with caplog.at_level(logging.WARNING):
        assert WitnessFile(path).read() is None
    assert [r.getMessage() for r in caplog.records if "garbled" in r.getMessage() and str(path) in r.getMessage()]


def test_a_failing_write_is_logged_once_and_recovery_too(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "gone"
    witness = WitnessFile(folder / "w")
    record = encode(Mark("abc", 1))
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            witness.write(record)  # no such folder: the open fails, each time
        folder.mkdir()
        witness.write(record)
        witness.write(record)
    witness.close()
    witness.close()  # idempotent
    messages = [r.getMessage() for r in caplog.records]
    assert sum("not written" in m for m in messages) == 1
    assert sum("written again" in m for m in messages) == 1
    assert WitnessFile(folder / "w").read() == Mark("abc", 1)


def test_the_best_witness_is_the_one_that_saw_most() -> None:
    a, b, c = WitnessFile(Path("a")), WitnessFile(Path("b")), WitnessFile(Path("c"))
    assert best([(a, None), (b, None)]) is None
    assert best([(a, Mark("g", 3)), (b, None), (c, Mark("h", 9))]) == (c, Mark("h", 9))
    assert best([(a, Mark("g", 3)), (b, Mark("h", 3))]) == (a, Mark("g", 3))


def test_the_lock_file_keeps_its_pid_and_the_witness_survives_a_new_lock(tmp_path: Path) -> None:
    state = tmp_path / "state"
    lock = StateLock([state])
    lock.acquire()
    witnesses = Witnesses([WitnessFile(state / LOCK_NAME, offset=PID_BYTES)])
    witnesses.write(Mark("abc", 17))
    witnesses.close()
    first_line = (state / LOCK_NAME).read_text().splitlines()[0]
    assert first_line.strip() == str(os.getpid()) and len(first_line) == PID_BYTES - 1
    lock.release()
    again = StateLock([state])
    again.acquire()  # writes its pid over the first PID_BYTES only
    try:
        fd = os.open(state / LOCK_NAME, os.O_RDONLY)
        try:
            assert read_pid(fd) == str(os.getpid())
        finally:
            os.close(fd)
        assert WitnessFile(state / LOCK_NAME, offset=PID_BYTES).read() == Mark("abc", 17)
    finally:
        again.release()


def test_an_older_brokers_lock_file_names_its_pid_and_holds_no_witness(tmp_path: Path) -> None:
    path = tmp_path / LOCK_NAME
    path.write_text("4242\n")
    fd = os.open(path, os.O_RDONLY)
    try:
        assert read_pid(fd) == "4242"
    finally:
        os.close(fd)
    assert WitnessFile(path, offset=PID_BYTES).read() is None
