"""`.env.example` documents every setting of every component, under the name the component reads."""

from __future__ import annotations

import re

import pytest
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from tts_broker.settings import BrokerSettings
from tts_client.settings import ClientSettings
from tts_gateway.settings import GatewaySettings
from tts_worker.settings import WorkerSettings

from harness import ROOT

pytestmark = pytest.mark.unit

EXAMPLE = (ROOT / ".env.example").read_text(encoding="utf-8")
DOCUMENTED = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", EXAMPLE, flags=re.MULTILINE))


def env_names(cls: type[BaseSettings]) -> list[tuple[str, str]]:
    prefix = cls.model_config.get("env_prefix", "")
    out = []
    for name, field in cls.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            envs = [c for c in alias.choices if isinstance(c, str) and c.isupper()]
        elif isinstance(alias, str):
            envs = [alias]
        else:
            envs = [(prefix + name).upper()]
        out.append((name, envs[0]))
    return out


@pytest.mark.parametrize("cls", [BrokerSettings, WorkerSettings, ClientSettings, GatewaySettings],
                         ids=lambda c: c.__name__)
def test_every_setting_is_in_env_example(cls: type[BaseSettings]) -> None:
    missing = [f"{field} ({env})" for field, env in env_names(cls) if env not in DOCUMENTED]
    assert not missing, f".env.example lacks: {', '.join(missing)}"
