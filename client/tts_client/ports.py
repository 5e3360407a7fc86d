"""Who holds a TCP port: the sentence `tts up` prints when its broker cannot bind (psutil)."""

from __future__ import annotations

from typing import Iterable, Optional

import psutil


def endpoint_port(endpoint: str) -> Optional[int]:
    """The port of tcp://HOST:PORT, None for another transport or a wildcard port."""
    if not endpoint.startswith("tcp://"):
        return None
    port = endpoint.rpartition(":")[2]
    return int(port) if port.isdigit() and int(port) > 0 else None


def port_holders(endpoints: Iterable[str]) -> list[str]:
    """For each tcp endpoint whose port some process listens on: "PORT is held by pid N (command line)".

    Empty when nothing listens or psutil may not look (another user's sockets without privileges)."""
    ports = {p for p in (endpoint_port(e) for e in endpoints) if p is not None}
    if not ports:
        return []
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return []
    found: list[str] = []
    seen: set[int] = set()
    for conn in connections:
        if conn.status != psutil.CONN_LISTEN or not conn.laddr or conn.laddr.port not in ports:
            continue
        port = conn.laddr.port
        if port in seen:
            continue
        seen.add(port)
        found.append(f"port {port} is held by {_describe(conn.pid)}")
    return sorted(found)


def _describe(pid: Optional[int]) -> str:
    if pid is None:
        return "a process we may not inspect"
    try:
        command = " ".join(psutil.Process(pid).cmdline())[:160]
    except (psutil.Error, OSError):
        command = ""
    return f"pid {pid} ({command})" if command else f"pid {pid}"
