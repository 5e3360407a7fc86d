"""A broker given a journal URL it cannot use says so in one line and exits with a distinct code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pg_throwaway import ThrowawayPostgres

pytestmark = pytest.mark.timeout(60)


def run_broker(tmp_path: Path, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tts_broker", "--journal-url", url, "--frontend", f"ipc://{tmp_path}/front",
         "--backend", f"ipc://{tmp_path}/back", "--state-dir", str(tmp_path / "state")],
        capture_output=True, text=True, timeout=45)


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in done.stderr.splitlines() if line.startswith("tts-broker:")]
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    return lines[0]


def test_unreachable_database(tmp_path: Path, dead_endpoint: str) -> None:
    port = dead_endpoint.rsplit(":", 1)[1]
    done = run_broker(tmp_path, f"postgresql://broker:pw@127.0.0.1:{port}/tts")
    assert done.returncode == 6
    line = one_line(done)
    assert "cannot connect to the journal" in line and "pw" not in line.replace("postgresql", "")


def test_wrong_password_and_missing_database(tmp_path: Path, postgres: ThrowawayPostgres, pg_url: str) -> None:
    database = pg_url.rsplit("/", 1)[1]
    done = run_broker(tmp_path, postgres.url(database, password="not-the-password"))
    assert done.returncode == 6
    assert "password authentication failed" in one_line(done)
    done = run_broker(tmp_path, postgres.url("no_such_database"))
    assert done.returncode == 6
    assert "does not exist" in one_line(done)


def test_not_a_postgresql_url(tmp_path: Path) -> None:
    done = run_broker(tmp_path, "mysql://broker@127.0.0.1/tts")
    assert done.returncode == 2
    assert "postgresql://" in one_line(done)


def test_another_schema_version(tmp_path: Path, postgres: ThrowawayPostgres, pg_url: str) -> None:
    database = pg_url.rsplit("/", 1)[1]
    postgres.sql("CREATE TABLE tts_meta (key text PRIMARY KEY, value text NOT NULL);"
                 "INSERT INTO tts_meta VALUES ('schema_version', '99'), ('epoch', '4');"
                 "ALTER TABLE tts_meta OWNER TO broker", database=database)
    done = run_broker(tmp_path, pg_url)
    assert done.returncode == 5
    assert "schema version 99" in one_line(done)
