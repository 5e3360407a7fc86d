"""The routing rule (tts_protocol.routing): the one place that says which worker serves which routing key."""

from __future__ import annotations

import pytest

from tts_protocol import routing

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

KEYS = [None, "piper", "piper:en_US-joe-medium", "piper:other", "fish-speech", "piper:", ""]


@pytest.mark.parametrize(("engine", "model"), [("piper", "en_US-joe-medium"), ("tone", "")])
def test_serves_exactly_the_served_keys(engine: str, model: str) -> None:
    for key in [*KEYS, engine, f"{engine}:{model}", f"{engine}:"]:
        assert routing.serves(engine, model, key) == (key in routing.served_keys(engine, model)), key


def test_rule_and_labels() -> None:
    assert routing.served_keys("piper", "en_US-joe-medium") == (None, "piper", "piper:en_US-joe-medium")
    assert routing.served_keys("tone", "") == (None, "tone")
    assert routing.serves("piper", "en_US-joe-medium", None) and routing.serves("piper", "x", "piper")
    assert not routing.serves("piper", "en_US-joe-medium", "piper:other")
    assert not routing.serves("tone", "", "tone:")  # a worker with no model name serves only nil and ENGINE
    assert routing.worker_key("piper", "en_US-joe-medium") == "piper:en_US-joe-medium"
    assert routing.worker_key("tone", "") == "tone"
