"""Env names and defaults of a settings class, written into a click command's `--help`.

Every component reads pydantic-settings from the environment and lets flags override them. The flag's help says
which variable sets it and what it is when nothing does, taken from the settings class itself so the help cannot
drift from the code: `add_settings_help(command, Settings)` appends `[env: TTS_X; default: Y]` to the help of
each option that sets a field. scripts/gen_config_docs.py uses the same env names and defaults for
docs/configuration.md.

A field marks itself with `json_schema_extra`: `{"secret": True}` (its help shows the env name only) or
`{"default_text": "the host name"}` (a default computed at run time, described instead of computed here).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, Mapping, Optional
from urllib.parse import urlsplit, urlunsplit

import click
from pydantic import AliasChoices, SecretBytes, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

# The note this module appends: replaced, not doubled, when a command is documented twice.
_NOTE = re.compile(r"\s*\[env: [^\]]*\]$")


@dataclass(frozen=True)
class Default:
    """A field's default as a reader should see it."""

    text: str
    literal: bool  # a value as one would set it (docs quote it), not a word such as `unset` or `the host name`


def env_name(settings: type[BaseSettings], name: str, field: FieldInfo) -> str:
    """The environment variable that sets field `name`: its upper-case alias, else env_prefix + name."""
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        names = [c for c in alias.choices if isinstance(c, str) and c.isupper()]
        if names:
            return names[0]
    if isinstance(alias, str):
        return alias
    return (str(settings.model_config.get("env_prefix", "")) + name).upper()


def _extra(field: FieldInfo) -> Mapping[str, Any]:
    extra = field.json_schema_extra
    return extra if isinstance(extra, dict) else {}


def is_secret(field: FieldInfo) -> bool:
    """A field whose value must never be shown: SecretStr/SecretBytes, or marked `{"secret": True}`."""
    return bool(_extra(field).get("secret")) or field.annotation in (SecretStr, SecretBytes)


def without_password(text: str) -> str:
    """`scheme://user:password@host/...` with the password replaced by `***`; other text unchanged."""
    if "://" not in text or "@" not in text:
        return text
    parts = urlsplit(text)
    if parts.password is None:
        return text
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def default_of(field: FieldInfo) -> Default:
    """A field's default: the value (paths and URLs as written, a URL's password hidden) or a word for none."""
    described = _extra(field).get("default_text")
    if described:
        return Default(str(described), literal=False)
    if field.default_factory is not None:
        value: Any = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return Default("required", literal=False)
    else:
        value = field.default
    if value is None:
        return Default("unset", literal=False)
    if isinstance(value, bool):
        return Default("true" if value else "false", literal=False)
    if isinstance(value, (dict, list, tuple)) and not value:
        return Default("{}" if isinstance(value, dict) else "(none)", literal=False)
    if isinstance(value, dict):
        return Default(",".join(f"{k}={v}" for k, v in value.items()), literal=True)
    if isinstance(value, (list, tuple)):
        return Default(",".join(str(v) for v in value), literal=True)
    if isinstance(value, PurePath):
        return Default(str(value), literal=True)
    return Default(without_password(str(value)), literal=True)


def settings_note(settings: type[BaseSettings], name: str) -> str:
    """`[env: TTS_X; default: Y]` for field `name` (`[env: TTS_X]` for a secret)."""
    field = settings.model_fields[name]
    env = env_name(settings, name, field)
    if is_secret(field):
        return f"[env: {env}]"
    return f"[env: {env}; default: {default_of(field).text}]"


def add_settings_help(command: click.Command, settings: type[BaseSettings], *,
                      fields: Optional[Mapping[str, str]] = None) -> click.Command:
    """Append the settings note to the help of each option of `command` that sets a field of `settings`.

    An option sets the field of its own name, or `fields[option name]`; options without a field are left alone.
    Safe to call twice. Returns `command`, so it also serves as a decorator's body.
    """
    for param in command.params:
        if not isinstance(param, click.Option) or param.name is None:
            continue
        name = (fields or {}).get(param.name, param.name)
        if name not in settings.model_fields:
            continue
        said = _NOTE.sub("", param.help or "").rstrip()
        param.help = f"{said} {settings_note(settings, name)}".lstrip()
    return command
