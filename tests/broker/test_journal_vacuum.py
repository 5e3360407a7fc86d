"""Attack (issue 19, item 18): the journal file grew past --journal-max-audio-mb (446 MB of free pages).

Pruning deletes rows, and SQLite kept the pages. With auto_vacuum=INCREMENTAL the pruned pages go back to the
file system: a 40 MiB journal pruned to a 4 MiB cap shrinks to about the cap; a journal of an older
version (no auto_vacuum) is converted at open.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from tts_protocol.constants import JobState, Priority
from tts_protocol.messages import Submit

from tts_broker.jobs import Job
from tts_broker.journal import Journal

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]

MIB = 1 << 20


def finished(job_id: str, audio_bytes: int) -> Job:
    request = Submit(job_id=job_id, text=f"text of {job_id}")
    job = Job(request=request, priority=Priority.NORMAL, model=None, accepted_at=0.0, accepted_wall=time.time())
    job.state, job.attempt, job.result, job.audio = JobState.DONE, 1, b"r", b"\x01" * audio_bytes
    job.finished_at = 1.0
    return job


def fill(journal: Journal, jobs: int, cap: int) -> None:
    for i in range(jobs):
        job = finished(f"j{i}", MIB)
        journal.record(job, new=True)
        journal.flush()
        journal.prune_audio(cap)


def file_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())


def test_pruned_audio_gives_its_pages_back(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    journal = Journal(path)
    fill(journal, 40, 64 * MIB)  # a burst (or a cap lowered at restart): the file reaches 40 MiB
    assert file_bytes(path) > 40 * MIB
    journal.prune_audio(4 * MIB)
    assert journal.audio_bytes <= 4 * MIB and journal.pruned_jobs >= 36
    journal.close()
    assert path.stat().st_size < 8 * MIB, f"journal file {path.stat().st_size / MIB:.1f} MiB for a 4 MiB cap"


def test_a_journal_without_auto_vacuum_is_converted_at_open(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    Journal(path).close()
    with sqlite3.connect(str(path)) as db:  # as an older version left it
        db.execute("PRAGMA journal_mode=DELETE")
        db.execute("PRAGMA auto_vacuum=NONE")
        db.execute("VACUUM")
        assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    journal = Journal(path, accept_loss=True)
    fill(journal, 20, 2 * MIB)
    journal.close()
    with sqlite3.connect(str(path)) as db:
        assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
    assert file_bytes(path) < 6 * MIB
