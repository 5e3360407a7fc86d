"""Every command's `--help`, run as a user runs it, names the env variable (and default) of each flag that a
settings field backs, without a traceback and without a password."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import click
import pytest
from pydantic_settings import BaseSettings

from tts_protocol.settings_help import env_name, is_secret

from tts_bridge.settings import BridgeSettings
from tts_broker.settings import BrokerSettings
from tts_client.settings import ClientSettings
from tts_gateway.settings import GatewaySettings
from tts_worker.settings import WorkerSettings

pytestmark = pytest.mark.timeout(60)

BIN = Path(sys.executable).parent
COLUMNS = 80


@dataclass(frozen=True)
class Case:
    argv: list[str]  # the console script, then subcommands
    command: str  # module:attribute of the click command
    settings: type[BaseSettings]
    anchors: list[str]  # notes written out here, not derived: the check does not only repeat the code
    fields: dict[str, str] = field(default_factory=dict)  # option name -> settings field, where they differ

    def __str__(self) -> str:
        return " ".join(self.argv)


CLIENT_FIELDS = {"fmt": "output_format"}
CASES = [
    Case(["tts-broker"], "tts_broker.cli:main", BrokerSettings,
         ["[env: TTS_FRONTEND; default: tcp://127.0.0.1:5555]", "[env: TTS_JOURNAL_URL]",
          "[env: TTS_JOURNAL_ENABLED; default: true]"]),
    Case(["tts-worker"], "tts_worker.cli:main", WorkerSettings,
         ["[env: TTS_WORKER_BROKER; default: tcp://127.0.0.1:5556]", "[env: AUDIO_DEVICE; default: auto]",
          "[env: TTS_WORKER_NAME; default: the host name]", "[env: TTS_WORKER_MIN; default: unset]"]),
    Case(["tts"], "tts_client.cli:main", ClientSettings,
         ["[env: TTS_BROKER_URL; default: tcp://127.0.0.1:5555]", "[env: TTS_CLIENT_TIMEOUT_S; default: 300.0]"]),
    Case(["tts", "say"], "tts_client.cli:say", ClientSettings,
         ["[env: TTS_CLIENT_OUTPUT_FORMAT; default: wav]", "[env: TTS_CLIENT_OUTPUT_DIR; default: output]"],
         CLIENT_FIELDS),
    Case(["tts", "batch"], "tts_client.cli:batch", ClientSettings,
         ["[env: TTS_CLIENT_MAX_IN_FLIGHT; default: 256]", "[env: TTS_CLIENT_SPEAKER; default: unset]"],
         CLIENT_FIELDS),
    Case(["tts", "get"], "tts_client.cli_admin:get", ClientSettings,
         ["[env: TTS_CLIENT_OUTPUT_FORMAT; default: wav]"], CLIENT_FIELDS),
    Case(["tts", "health"], "tts_client.cli_admin:health", ClientSettings, ["[env: TTS_CLIENT_MODEL; default: unset]"]),
    Case(["tts", "gateway"], "tts_gateway.cli:gateway", GatewaySettings,
         ["[env: TTS_GATEWAY_LISTEN; default: 127.0.0.1:8000]", "[env: TTS_GATEWAY_BROKER; default: unset]"]),
    Case(["tts", "bridge", "redis-streams"], "tts_bridge.cli:redis_streams", BridgeSettings,
         ["[env: TTS_BRIDGE_MAX_IN_FLIGHT; default: 64]", "[env: TTS_BRIDGE_OUTPUT_DIR; default: output]"]),
    Case(["tts", "bridge", "bullmq"], "tts_bridge.cli:bullmq", BridgeSettings,
         ["[env: TTS_BRIDGE_DEAD_AFTER_S; default: 30.0]"]),
    Case(["tts", "bridge", "amqp"], "tts_bridge.cli:amqp", BridgeSettings,
         ["[env: TTS_BRIDGE_MAX_TEXT_CHARS; default: 20000]", "[default: amqp://127.0.0.1:5672/]"]),
]

# scheme://USER:PASSWORD@ in any URL; a password may only be hidden (***) or an upper-case placeholder.
CREDENTIALS = re.compile(r"://([^\s/@:\[]*)\[?:([^\s/@\]]+)@")


def run_help(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    script = BIN / argv[0]
    assert script.exists(), f"{script} is missing: `make install` installs the console scripts"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TTS_", "CONCURRENT_", "AUDIO_"))}
    env["COLUMNS"] = str(COLUMNS)
    return subprocess.run([str(script), *argv[1:], "--help"], capture_output=True, text=True, timeout=50,
                          cwd=cwd, env=env, check=False)


def backed_options(case: Case) -> list[tuple[click.Option, str]]:
    """(option, field) for each visible option of the command that a settings field backs."""
    module_name, attribute = case.command.split(":")
    command = getattr(importlib.import_module(module_name), attribute)
    found = []
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden and param.name is not None:
            name = case.fields.get(param.name, param.name)
            if name in case.settings.model_fields:
                found.append((param, name))
    return found


@pytest.mark.parametrize("case", CASES, ids=str)
def test_help_names_the_env_of_every_settings_flag_and_no_password(case: Case, tmp_path: Path) -> None:
    done = run_help(case.argv, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stdout + done.stderr and done.stderr == ""
    assert max(len(line) for line in done.stdout.splitlines()) <= COLUMNS  # click wrapped it
    flat = " ".join(done.stdout.split())  # a note may be wrapped over lines; the words stay whole
    backed = backed_options(case)
    assert backed, f"{case}: no option backed by {case.settings.__name__}?"
    for option, name in backed:
        env = env_name(case.settings, name, case.settings.model_fields[name])
        notes = re.findall(rf"\[env: {re.escape(env)}(; default: [^\]]+)?\]", flat)
        assert len(notes) == 1, f"{case} {option.opts[0]}: {len(notes)} notes naming {env} in:\n{done.stdout}"
        secret = is_secret(case.settings.model_fields[name])
        assert (notes[0] == "") == secret, f"{case} {option.opts[0]}: a secret shows no default, others do"
    for anchor in case.anchors:
        assert anchor in flat, f"{case}: {anchor!r} not in:\n{done.stdout}"
    for user, password in CREDENTIALS.findall(done.stdout):
        assert password == "***" or re.fullmatch(r"[A-Z_]+", password), f"{case}: {user}:{password}@ in --help"
    assert "guest:guest" not in done.stdout
