"""The routing rule: which worker serves which routing key (PROTOCOL.md section 3, SUBMIT's `model`).

A job's `model` is a routing key, `ENGINE` or `ENGINE:MODEL`, or nil for "any worker" (after the broker's
default is applied). A worker that loaded MODEL on ENGINE (its READY's `engine` and `model`) serves nil,
`ENGINE` and `ENGINE:MODEL`; a worker with no model name serves nil and `ENGINE`. The broker's dispatch and
metrics, the `tts` command line and the HTTP gateway all ask this module, so they cannot disagree.
"""

from __future__ import annotations

from typing import Optional


def worker_key(engine: str, model: str) -> str:
    """The most specific routing key a worker serves, and the label it is shown under: ENGINE:MODEL or ENGINE."""
    return f"{engine}:{model}" if model else engine


def served_keys(engine: str, model: str) -> tuple[Optional[str], ...]:
    """Every routing key a worker with this engine and model serves, None (no model named) first."""
    return (None, engine, f"{engine}:{model}") if model else (None, engine)


def serves(engine: str, model: str, key: Optional[str]) -> bool:
    """Whether a worker with this engine and model takes jobs for routing key `key` (None: any worker)."""
    return key is None or key == engine or (bool(model) and key == f"{engine}:{model}")
