"""Helpers and fixtures for the failover drills (tests/failover): brokers on one PostgreSQL journal (the
session's throwaway cluster, tests/pg_throwaway.py), each with its own ipc:// endpoints, so clients and workers
get an endpoint list. Test modules import the fixtures they use (pg_brokers, pg_proxy, tone_worker_on).

ipc:// endpoints in the test's folder are known before a broker binds them (a standby binds nothing until
it leads) and cannot collide with another test's, which a port picked in advance could.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest

from harness import Proc, read_json, wait_for


class PgBroker:
    """One `tts-broker --journal-url` process: active once its ready file exists, standby until then."""

    def __init__(self, name: str, tmp: Path, procs: list[Proc], url: str, extra: list[str]) -> None:
        self.name = name
        self.tmp = tmp
        self.procs = procs
        self.url = url
        self.extra = extra
        self.frontend = f"ipc://{tmp}/{name}-front"
        self.backend = f"ipc://{tmp}/{name}-back"
        self.proc: Optional[Proc] = None
        self.starts = 0

    @property
    def ready_file(self) -> Path:
        return self.tmp / f"{self.name}-ready-{self.starts}.json"

    def start(self, *extra: str) -> PgBroker:
        self.starts += 1
        args = [sys.executable, "-m", "tts_broker", "--frontend", self.frontend, "--backend", self.backend,
                "--journal-url", self.url, "--state-dir", str(self.tmp / f"{self.name}-state"), "--ready-file",
                str(self.ready_file), "--log-level", "DEBUG", *self.extra, *extra]
        self.proc = Proc(args, self.tmp / f"{self.name}-{self.starts}.log")
        self.procs.append(self.proc)
        return self

    def active(self) -> bool:
        return self.ready_file.exists()

    def wait_active(self, timeout_s: float = 30.0) -> PgBroker:
        proc = self.proc
        assert proc is not None
        wait_for(lambda: self.active() or not proc.alive(), timeout_s, what=f"broker {self.name} active")
        if not proc.alive():
            raise AssertionError(f"broker {self.name} exited:\n{proc.log()}")
        return self

    def wait_standby(self, timeout_s: float = 30.0) -> PgBroker:
        proc = self.proc
        assert proc is not None
        wait_for(lambda: "waiting to take over" in proc.log() or not proc.alive(), timeout_s,
                 what=f"broker {self.name} standing by")
        assert proc.alive(), proc.log()
        return self

    def pid(self) -> int:
        assert self.proc is not None
        return int(read_json(self.ready_file)["pid"]) if self.active() else self.proc.pid


@pytest.fixture
def pg_brokers(tmp_path: Path, procs: list[Proc], pg_url: str) -> Callable[..., PgBroker]:
    """pg_brokers(name, *extra_args) -> an unstarted PgBroker on this test's fresh journal database."""

    def make(name: str, *extra: str, url: Optional[str] = None) -> PgBroker:
        return PgBroker(name, tmp_path, procs, url or pg_url, list(extra))

    return make


def endpoint_list(*brokers: PgBroker, side: str = "frontend") -> str:
    return ",".join(getattr(b, side) for b in brokers)


@pytest.fixture
def tone_worker_on(start_worker: Callable[..., Proc], tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """tone_worker_on(endpoints, concurrency, **opts): a tone worker supervisor on an endpoint list."""

    class _Endpoints:  # start_worker wants something with `.backend`
        def __init__(self, backend: str) -> None:
            self.backend = backend

    def start(backends: str, concurrency: int = 1, **opts: object) -> Proc:
        return start_worker(_Endpoints(backends), engine="tone", opts=opts or None, concurrency=concurrency)

    yield start


class FreezableProxy:
    """A TCP proxy on 127.0.0.1 towards one port. freeze() cuts the path the way a network partition does:
    nothing is forwarded any more, in either direction, but every connection stays open (no FIN, no RST), so
    neither end learns of it from TCP. New connections are accepted and then hang the same way."""

    def __init__(self, target_port: int) -> None:
        import socket
        import threading

        self.target_port = target_port
        self.frozen = threading.Event()
        self.closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = int(self.listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True, name="test-proxy-accept").start()

    def _track(self, sock: object) -> None:
        with self._lock:
            self._sockets.append(sock)  # type: ignore[arg-type]

    def _accept(self) -> None:
        import socket
        import threading

        while not self.closed.is_set():
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            self._track(down)
            if self.frozen.is_set():
                continue  # accepted, never answered: a connect that hangs
            try:
                up = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                down.close()
                continue
            up.settimeout(None)
            self._track(up)
            for src, dst in ((down, up), (up, down)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True, name="test-proxy-pump").start()

    def _pump(self, src: object, dst: object) -> None:
        import socket

        assert isinstance(src, socket.socket) and isinstance(dst, socket.socket)
        while not self.closed.is_set():
            try:
                data = src.recv(65536)
            except OSError:
                return
            if not data:
                if not self.frozen.is_set():
                    try:
                        dst.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                return
            if self.frozen.is_set():
                self.closed.wait()  # swallow: the partition
                return
            try:
                dst.sendall(data)
            except OSError:
                return

    def freeze(self) -> None:
        self.frozen.set()

    def close(self) -> None:
        self.closed.set()
        self.listener.close()
        with self._lock:
            for sock in self._sockets:
                try:
                    sock.close()
                except OSError:
                    pass


@pytest.fixture
def pg_proxy(postgres: object) -> Iterator[Callable[[], FreezableProxy]]:
    """pg_proxy() -> a FreezableProxy in front of the session's PostgreSQL; closed at teardown."""
    made: list[FreezableProxy] = []

    def make() -> FreezableProxy:
        proxy = FreezableProxy(postgres.port)  # type: ignore[attr-defined]
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.close()
