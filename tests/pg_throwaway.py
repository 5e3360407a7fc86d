"""A throwaway PostgreSQL cluster for the tests: installed from Debian's packages when missing, run as a
non-root user in a temporary folder on a free loopback port, removed at the end.

A pytest plugin (tests/conftest.py names it in pytest_plugins): the session fixture `postgres` starts one
cluster for the whole run, the first time a test asks for it; `pg_url` gives each test a fresh database. Also
run by scripts/pg-throwaway.sh (for a shell or a benchmark). PostgreSQL refuses to run as root, so under root
every server command runs as `postgres` through `runuser`. Authentication: trust on the cluster's own unix
socket (inside the temporary folder), SCRAM passwords on 127.0.0.1, so a wrong password is a real failure.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator, Optional

import pytest

SUPERUSER = "postgres"
BROKER_ROLE = "broker"


class PostgresUnavailable(Exception):
    """PostgreSQL cannot be installed or started here (the message says why)."""


def find_bindir() -> Optional[Path]:
    """The newest installed PostgreSQL server's bin folder (Debian layout), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def install() -> Path:
    """Install PostgreSQL from Debian's packages if it is missing; returns its bin folder."""
    bindir = find_bindir()
    if bindir is not None:
        return bindir
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise PostgresUnavailable("PostgreSQL is not installed and cannot be (needs root and apt-get): "
                                  "apt-get install postgresql")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "postgresql"]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise PostgresUnavailable(f"{' '.join(cmd)} failed: {done.stderr.strip()[-500:]}")
    bindir = find_bindir()
    if bindir is None:
        raise PostgresUnavailable("apt-get installed postgresql but no initdb was found")
    return bindir


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ThrowawayPostgres:
    """One cluster: start(), url(...), new_database(), restart(), stop()."""

    def __init__(self) -> None:
        self.bindir = install()
        self.as_root = os.geteuid() == 0
        self.root = Path(tempfile.mkdtemp(prefix="tts-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sock"
        self.password = secrets.token_hex(8)
        self.port = 0
        self._dbs = 0

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", SUPERUSER, "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.root)
        if done.returncode != 0:
            raise PostgresUnavailable(f"{args[0]} failed: {(done.stderr or done.stdout).strip()[-800:]}")
        return done

    def start(self) -> ThrowawayPostgres:
        self.sockets.mkdir()
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self.as_root:
            os.chmod(self.root, 0o755)
            shutil.chown(self.root, SUPERUSER)
            shutil.chown(self.sockets, SUPERUSER)
            shutil.chown(pwfile, SUPERUSER)
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, f"--pwfile={pwfile}", "--auth-local=trust",
                  "--auth-host=scram-sha-256", "--no-sync", "-E", "UTF8", "--locale=C")
        pwfile.unlink()
        for attempt in range(5):  # the port is free when picked; another program may take it before we bind
            self.port = free_port()
            try:
                self._ctl_start()
                break
            except PostgresUnavailable:
                if attempt == 4:
                    raise
        self.sql(f"CREATE ROLE {BROKER_ROLE} LOGIN PASSWORD '{self.password}'")
        return self

    def _ctl_start(self) -> None:
        opts = (f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c max_connections=200 -c shared_buffers=32MB")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-o", opts, "-w",
                  "-t", "60", "start")

    def sql(self, statement: str, *, database: str = "postgres") -> str:
        """Run one statement as the superuser over the unix socket; returns psql's output."""
        return self._run("psql", "-h", str(self.sockets), "-p", str(self.port), "-U", SUPERUSER, "-d", database,
                         "-v", "ON_ERROR_STOP=1", "-At", "-c", statement).stdout

    def new_database(self) -> str:
        """A fresh database owned by the broker role; returns its name."""
        self._dbs += 1
        name = f"tts_{os.getpid()}_{self._dbs}"
        self.sql(f"CREATE DATABASE {name} OWNER {BROKER_ROLE} TEMPLATE template0")
        return name

    def url(self, database: str, *, password: Optional[str] = None, port: Optional[int] = None) -> str:
        pw = self.password if password is None else password
        return f"postgresql://{BROKER_ROLE}:{pw}@127.0.0.1:{port or self.port}/{database}"

    def restart(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        self._ctl_start()

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[ThrowawayPostgres]:
    """One throwaway PostgreSQL for the session (installed from Debian's packages when missing)."""
    try:
        pg = ThrowawayPostgres().start()
    except PostgresUnavailable as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    try:
        yield pg
    finally:
        pg.stop()


@pytest.fixture
def pg_url(postgres: ThrowawayPostgres) -> str:
    """A URL to a fresh, empty database of the session's PostgreSQL."""
    return postgres.url(postgres.new_database())


def main() -> int:
    """scripts/pg-throwaway.sh: start a cluster, print a database URL, wait for Ctrl-C or SIGTERM, remove it."""
    try:
        pg = ThrowawayPostgres().start()
    except PostgresUnavailable as exc:
        print(f"pg-throwaway: {exc}", file=sys.stderr)
        return 1
    try:
        db = pg.new_database()
        print(pg.url(db), flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
    finally:
        pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
