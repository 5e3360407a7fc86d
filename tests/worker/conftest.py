"""Fixtures of the worker tests (the shared ones, such as start_worker, are in tests/conftest.py)."""

from __future__ import annotations

import pytest

from harness import TrackedContext
from peers import WorkerScriptedBroker


@pytest.fixture
def fake_broker(ctx: TrackedContext) -> WorkerScriptedBroker:
    """A broker the test plays by hand for a real worker process (tests/peers.py); closed with `ctx`."""
    return WorkerScriptedBroker(ctx)
