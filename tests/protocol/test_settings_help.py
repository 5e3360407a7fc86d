"""tts_protocol.settings_help: each flag's help names the env variable and default of the setting it overrides."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Optional

import click
import pytest
from click.testing import CliRunner
from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from tts_protocol.settings_help import add_settings_help, default_of, env_name, without_password

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]


class DemoSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TTS_DEMO_")

    endpoint: str = Field("tcp://127.0.0.1:5555")
    timeout_s: float = 2.5
    cache: bool = True
    state_dir: Path = Path("/var/lib/tts")
    queue_url: str = "amqp://user:hunter2@mq.example:5672/"
    journal_url: Optional[str] = Field(None, json_schema_extra={"secret": True})
    api_token: SecretStr = SecretStr("sekrit-default")
    models: dict[str, str] = Field(default_factory=lambda: {"tts-1": "piper"})
    engines: list[str] = Field(default_factory=list)
    host: str = Field(default_factory=socket.gethostname, json_schema_extra={"default_text": "the host name"})
    device: str = Field("auto", validation_alias=AliasChoices("AUDIO_DEVICE", "device"))


def demo_command() -> click.Command:
    @click.command(context_settings={"show_default": True})
    @click.option("--endpoint", help="Where to connect.")
    @click.option("--timeout-s", type=float, help="How long to wait.")
    @click.option("--no-cache", "cache", flag_value=False, default=None, help="Turn the cache off.")
    @click.option("--state-dir", type=click.Path(file_okay=False))
    @click.option("--queue", "queue_url", help="Queue URL.")
    @click.option("--journal-url", help="postgresql://USER:PASSWORD@HOST/DB.")
    @click.option("--api-token", help="Bearer token.")
    @click.option("--host", help="Name shown in status.")
    @click.option("--device", help="Where the engine runs.")
    @click.option("--format", "fmt", help="Audio format.")
    @click.option("--verbose", is_flag=True, help="Say more.")
    def demo(**_: object) -> None:
        """A demo command."""

    return demo


def option(command: click.Command, name: str) -> click.Option:
    found = next(p for p in command.params if p.name == name)
    assert isinstance(found, click.Option)
    return found


def test_each_option_with_a_field_gets_env_name_and_default() -> None:
    command = add_settings_help(demo_command(), DemoSettings)
    assert option(command, "endpoint").help == "Where to connect. [env: TTS_DEMO_ENDPOINT; default: tcp://127.0.0.1:5555]"
    assert option(command, "timeout_s").help == "How long to wait. [env: TTS_DEMO_TIMEOUT_S; default: 2.5]"
    assert option(command, "cache").help == "Turn the cache off. [env: TTS_DEMO_CACHE; default: true]"
    assert option(command, "state_dir").help == "[env: TTS_DEMO_STATE_DIR; default: /var/lib/tts]"  # path, as such
    assert option(command, "host").help == "Name shown in status. [env: TTS_DEMO_HOST; default: the host name]"
    assert option(command, "device").help == "Where the engine runs. [env: AUDIO_DEVICE; default: auto]"  # alias


def test_secrets_show_the_env_name_only_and_url_passwords_are_hidden() -> None:
    command = add_settings_help(demo_command(), DemoSettings)
    assert option(command, "journal_url").help == "postgresql://USER:PASSWORD@HOST/DB. [env: TTS_DEMO_JOURNAL_URL]"
    assert option(command, "api_token").help == "Bearer token. [env: TTS_DEMO_API_TOKEN]"
    assert option(command, "queue_url").help == "Queue URL. [env: TTS_DEMO_QUEUE_URL; default: " \
                                                "amqp://user:***@mq.example:5672/]"
    result = CliRunner().invoke(command, ["--help"])
    assert result.exit_code == 0 and "hunter2" not in result.output and "sekrit" not in result.output


def test_options_without_a_field_are_left_alone_unless_mapped() -> None:
    command = add_settings_help(demo_command(), DemoSettings)
    assert option(command, "verbose").help == "Say more."
    assert option(command, "fmt").help == "Audio format."
    mapped = add_settings_help(demo_command(), DemoSettings, fields={"fmt": "device"})
    assert option(mapped, "fmt").help == "Audio format. [env: AUDIO_DEVICE; default: auto]"


def test_twice_is_once() -> None:
    command = add_settings_help(add_settings_help(demo_command(), DemoSettings), DemoSettings)
    assert option(command, "endpoint").help == "Where to connect. [env: TTS_DEMO_ENDPOINT; default: tcp://127.0.0.1:5555]"


def test_help_wraps_to_the_terminal_and_keeps_each_note_whole() -> None:
    command = add_settings_help(demo_command(), DemoSettings)
    result = CliRunner().invoke(command, ["--help"], terminal_width=60)
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.output.splitlines()) <= 60
    flat = " ".join(result.output.split())
    assert "[env: TTS_DEMO_TIMEOUT_S; default: 2.5]" in flat and "[env: AUDIO_DEVICE; default: auto]" in flat


def test_defaults_and_env_names() -> None:
    fields = DemoSettings.model_fields
    assert env_name(DemoSettings, "device", fields["device"]) == "AUDIO_DEVICE"
    assert env_name(DemoSettings, "timeout_s", fields["timeout_s"]) == "TTS_DEMO_TIMEOUT_S"
    assert (default_of(fields["models"]).text, default_of(fields["models"]).literal) == ("tts-1=piper", True)
    assert (default_of(fields["engines"]).text, default_of(fields["engines"]).literal) == ("(none)", False)
    assert (default_of(fields["journal_url"]).text, default_of(fields["journal_url"]).literal) == ("unset", False)
    assert default_of(fields["state_dir"]).text == "/var/lib/tts"


def test_without_password() -> None:
    assert without_password("amqp://guest:guest@127.0.0.1:5672/") == "amqp://guest:***@127.0.0.1:5672/"
    assert without_password("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    assert without_password("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert without_password("tcp://a:1,tcp://b:2") == "tcp://a:1,tcp://b:2"
    assert without_password("me@example") == "me@example"
