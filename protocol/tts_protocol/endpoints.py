"""Endpoint lists: `tcp://a:5555,tcp://b:5555` names an active broker and its standbys (docs/failover.md).

Clients and workers connect to one endpoint of the list at a time (a socket per endpoint, so nothing they send
can wait on the pipe of a broker that is not active) and move to the next when the one they use falls silent.
"""

from __future__ import annotations

SCHEMES = ("tcp://", "ipc://", "inproc://")


def split_endpoints(value: str) -> list[str]:
    """`tcp://a:5556,tcp://b:5556` -> the endpoints in order; ValueError if one is not a ZeroMQ endpoint."""
    endpoints = [part.strip() for part in value.split(",") if part.strip()]
    if not endpoints:
        raise ValueError("no broker endpoint given")
    for endpoint in endpoints:
        if not endpoint.startswith(SCHEMES) or endpoint.split("://", 1)[1] == "":
            raise ValueError(f"broker URL {endpoint!r} is not a ZeroMQ endpoint; expected tcp://HOST:PORT "
                             "(or a comma-separated list of them)")
    return endpoints
