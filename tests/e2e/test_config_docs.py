"""docs/configuration.md is generated from the settings classes and must be current."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

ROOT = Path(__file__).resolve().parents[2]


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_config_docs", ROOT / "scripts" / "gen_config_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_configuration_doc_is_current() -> None:
    current = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert current == generator().render(), "docs/configuration.md is stale: run python scripts/gen_config_docs.py"


def test_every_setting_has_env_flag_default_and_meaning() -> None:
    gen = generator()
    for component in gen.components():
        table = gen.rows(component, gen.env_example_comments())
        assert len(table) == len(component.settings.model_fields)
        for row in table:
            assert row.env and row.default and row.meaning.endswith("."), row
    worker = next(c for c in gen.components() if c.command == "tts-worker")
    flags = {row.env: row.flag for row in gen.rows(worker, gen.env_example_comments())}
    assert flags["TTS_WORKER_MIN"] == "`--min`" and flags["TTS_WORKER_MAX"] == "`--max`"

