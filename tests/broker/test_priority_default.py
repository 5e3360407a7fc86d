"""Attack (issue 19, item 18): under CURVE any client key could jump the queue with priority high.

The default is `admin` when CURVE is on (`all` without it); an explicit setting wins. PROTOCOL.md section 5
must say exactly that.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tts_broker.settings import BrokerSettings

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]

CURVE = {"curve_secret": "broker.key_secret", "client_keys": "clients", "worker_keys": "workers"}


def test_high_priority_defaults_to_admin_under_curve_and_to_all_without() -> None:
    assert BrokerSettings(_env_file=None).allow_high_priority == "all"  # type: ignore[call-arg]
    assert BrokerSettings(_env_file=None, **CURVE).allow_high_priority == "admin"  # type: ignore[call-arg]
    explicit = BrokerSettings(_env_file=None, allow_high_priority="all", **CURVE)  # type: ignore[call-arg]
    assert explicit.allow_high_priority == "all"


def test_env_setting_wins_over_the_curve_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTS_ALLOW_HIGH_PRIORITY", "none")
    assert BrokerSettings(_env_file=None, **CURVE).allow_high_priority == "none"  # type: ignore[call-arg]


def test_protocol_section_5_states_the_default_the_code_applies() -> None:
    text = (Path(__file__).parents[2] / "protocol" / "PROTOCOL.md").read_text(encoding="utf-8")
    section = text.split("## 5.", 1)[1].split("\n## 6.", 1)[0]
    flat = " ".join(section.split())
    assert "Default: `admin` when CURVE is on, `all` without it." in flat
    assert "`all` (default)" not in flat and "until then nobody" not in flat
