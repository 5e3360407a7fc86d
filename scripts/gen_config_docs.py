"""Write docs/configuration.md from the settings classes: every setting's env name, flag, default and meaning.

    python scripts/gen_config_docs.py           rewrite docs/configuration.md
    python scripts/gen_config_docs.py --check   exit 1 if it is stale (tests/e2e/test_config_docs.py does this)

Env names come from each field's alias (or the class's env_prefix), flags from the click commands that set the
field, the meaning from the field's description, else the flag's help, else the comment above its line in
.env.example. A setting with no meaning anywhere stops the script: document it.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import click
from pydantic import AliasChoices
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "configuration.md"

# click parameter names that differ from the settings field they set: {(command, param name): field}
PARAM_FIELDS = {("tts gateway", "gateway_broker"): "broker"}
# defaults computed at run time, described instead of shown
FACTORY_DEFAULTS = {"gethostname": "the host name"}


@dataclass(frozen=True)
class Component:
    title: str
    settings: type[BaseSettings]
    command: str
    cli: Optional[click.Command]
    note: str


@dataclass(frozen=True)
class Row:
    field: str
    env: str
    flag: str
    default: str
    meaning: str


def components() -> list[Component]:
    from tts_broker.cli import main as broker_cli
    from tts_broker.settings import BrokerSettings
    from tts_client.cli import main as client_cli
    from tts_client.settings import ClientSettings
    from tts_gateway.cli import gateway as gateway_cli
    from tts_gateway.settings import GatewaySettings
    from tts_worker.cli import main as worker_cli
    from tts_worker.settings import WorkerSettings

    return [
        Component("Broker", BrokerSettings, "tts-broker", broker_cli,
                  "`tts-broker` reads these; its flags override them."),
        Component("Worker", WorkerSettings, "tts-worker", worker_cli,
                  "`tts-worker` (the supervisor and each worker process) reads these; its flags override them."),
        Component("Clients", ClientSettings, "tts", client_cli,
                  "The Python client, the `tts` CLI and the Node client read these (the Node client: "
                  "TTS_BROKER_URL)."),
        Component("HTTP gateway", GatewaySettings, "tts gateway", gateway_cli,
                  "`tts gateway` (extra `.[gateway]`) reads these; its flags override them."),
    ]


def env_name(cls: type[BaseSettings], name: str, field: FieldInfo) -> str:
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        names = [c for c in alias.choices if isinstance(c, str) and c.isupper()]
        if names:
            return names[0]
    if isinstance(alias, str):
        return alias
    return (str(cls.model_config.get("env_prefix", "")) + name).upper()


def flags_by_field(component: Component) -> dict[str, tuple[str, str]]:
    """field -> (flag text, help) from the click command's options."""
    found: dict[str, tuple[str, str]] = {}
    if component.cli is None:
        return found
    for param in component.cli.params:
        if not isinstance(param, click.Option) or param.name is None or param.hidden:
            continue
        field = PARAM_FIELDS.get((component.command, param.name), param.name)
        flag = " / ".join(f"`{opt}`" for opt in [*param.opts, *param.secondary_opts])
        found[field] = (flag, param.help or "")
    return found


def default_text(field: FieldInfo) -> str:
    if field.default_factory is not None:
        factory = getattr(field.default_factory, "__name__", "")
        if factory in FACTORY_DEFAULTS:
            return FACTORY_DEFAULTS[factory]
        value: Any = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)) and not value:
        return "{}" if isinstance(value, dict) else "(none)"
    if isinstance(value, dict):
        return "`" + ",".join(f"{k}={v}" for k, v in value.items()) + "`"
    if isinstance(value, list):
        return "`" + ",".join(str(v) for v in value) + "`"
    return f"`{value}`"


def env_example_comments() -> dict[str, str]:
    """NAME -> the comment lines just above `#NAME=` in .env.example (shared by consecutive names)."""
    comments: dict[str, str] = {}
    block: list[str] = []
    after_name = False
    for line in (ROOT / ".env.example").read_text(encoding="utf-8").splitlines():
        match = re.match(r"^#?\s*([A-Z][A-Z0-9_]+)=", line)
        if match:
            if block:
                comments.setdefault(match.group(1), " ".join(block))
            after_name = True
        elif line.startswith("# ") and not line.startswith(("# ----", "#   ")):
            if after_name:
                block = []
            block.append(line[2:].strip())
            after_name = False
        elif not line.startswith("#   "):
            block, after_name = [], False
    return comments


def sentence(text: str) -> str:
    """One sentence: capitalised, ending in a single period, without a trailing "Examples:"."""
    text = re.sub(r"\s*Examples:$", "", text.strip()).rstrip(".").strip()
    return text[0].upper() + text[1:] + "." if text else ""


def clean_help(text: str) -> str:
    """A flag's help without its trailing `[env ...]` note (the table has its own column)."""
    return sentence(re.sub(r"\s*\[(env |TTS_|default)[^\]]*\]\.?\s*$", "", text.strip()))


def rows(component: Component, comments: dict[str, str]) -> list[Row]:
    flags = flags_by_field(component)
    out: list[Row] = []
    for name, field in component.settings.model_fields.items():
        env = env_name(component.settings, name, field)
        flag, help_text = flags.get(name, ("", ""))
        meaning = sentence(field.description or "") or clean_help(help_text) or sentence(comments.get(env, ""))
        if not meaning:
            raise SystemExit(f"gen_config_docs: {component.settings.__name__}.{name} ({env}) has no description, "
                             "no flag help and no .env.example comment: document it")
        out.append(Row(name, env, flag or "-", default_text(field), meaning.replace("|", "\\|")))
    return out


def render() -> str:
    comments = env_example_comments()
    parts = [
        "# Configuration",
        "",
        "<!-- Generated by scripts/gen_config_docs.py from the settings classes; do not edit by hand. -->",
        "",
        "Every component reads its settings from the environment and from a `.env` file in the current folder",
        "(`cp .env.example .env`); command-line flags override both. Durations are in seconds (`_s`), sizes in",
        "bytes unless the name says MB. `.env.example` has the same names with examples.",
        "",
    ]
    for component in components():
        parts += [f"## {component.title} (`{component.command}`)", "", component.note, "",
                  "| env | flag | default | meaning |", "|---|---|---|---|"]
        for row in rows(component, comments):
            parts.append(f"| `{row.env}` | {row.flag} | {row.default} | {row.meaning} |")
        parts.append("")
    return "\n".join(parts)


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            print("docs/configuration.md is stale: run python scripts/gen_config_docs.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
