"""Write docs/configuration.md from the settings classes: every setting's env name, flag, default and meaning.

    python scripts/gen_config_docs.py           rewrite docs/configuration.md
    python scripts/gen_config_docs.py --check   exit 1 if it is stale (tests/e2e/test_config_docs.py does this)

Env names and defaults come from tts_protocol.settings_help, as every `--help` shows them (each field's alias
or the class's env_prefix), flags from the click commands that set the field, the meaning from the field's
description, else the flag's help, else the comment above its line in .env.example. A setting with no meaning
anywhere stops the script: document it.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import click
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from tts_protocol.settings_help import default_of, env_name

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "configuration.md"


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
    from tts_bridge.cli import redis_streams as bridge_cli
    from tts_bridge.settings import BridgeSettings
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
        Component("Queue bridges", BridgeSettings, "tts bridge", bridge_cli,
                  "`tts bridge bullmq|redis-streams|amqp` (extra `.[bridges]`, docs/bridges.md) read these; their "
                  "flags override them. The broker endpoint and CURVE keys are the clients' settings above."),
    ]


def flags_by_field(component: Component) -> dict[str, tuple[str, str]]:
    """field -> (flag text, help) from the click command's options."""
    found: dict[str, tuple[str, str]] = {}
    if component.cli is None:
        return found
    for param in component.cli.params:
        if not isinstance(param, click.Option) or param.name is None or param.hidden:
            continue
        flag = " / ".join(f"`{opt}`" for opt in [*param.opts, *param.secondary_opts])
        found[param.name] = (flag, param.help or "")
    return found


def default_text(field: FieldInfo) -> str:
    default = default_of(field)
    return f"`{default.text}`" if default.literal else default.text


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
    """A flag's help without its trailing `[env: ...]` note (the table has its own columns)."""
    return sentence(re.sub(r"\s*\[env: [^\]]*\]$", "", text.strip()))


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
