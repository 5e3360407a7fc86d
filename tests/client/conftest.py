"""Fixtures of the client tests (the shared ones, such as make_client, are in tests/conftest.py)."""

from __future__ import annotations

import pytest

from harness import TrackedContext
from peers import ScriptedBroker


@pytest.fixture
def scripted(ctx: TrackedContext) -> ScriptedBroker:
    """A broker the test plays by hand (tests/peers.py), closed at teardown with the `ctx` fixture."""
    return ScriptedBroker(ctx)
