"""File names of built lines: a template like `{speaker}/{id}`, never able to leave the output folder."""

from __future__ import annotations

import re
import string
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tts_studio.manifest import ManifestLine

DEFAULT_TEMPLATE = "{stream_index}_{id}"
FIELDS = {"id", "speaker", "stream_index", "model"}
# What a path part may hold: letters (any script), digits, and a few marks; everything else becomes "_".
_UNSAFE = re.compile(r"[^\w.\- ]+", re.UNICODE)
_RESERVED = {"build-report.json", "build-report.html", "tts-build.lock"}


class NameTemplate:
    """Turns a manifest line into a relative path (POSIX separators, no extension) inside the output folder."""

    def __init__(self, template: str = DEFAULT_TEMPLATE) -> None:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
        unknown = fields - FIELDS
        if unknown:
            raise ValueError(f"name template {template!r}: unknown field(s) {', '.join(sorted(unknown))}; "
                             f"use {', '.join(sorted(FIELDS))}")
        if "id" not in fields:
            raise ValueError(f"name template {template!r} must use {{id}} (ids are what keep names apart)")
        if template.startswith("/") or "\\" in template:
            raise ValueError(f"name template {template!r} must be a relative path with / separators")
        self.template = template

    def relative(self, line: ManifestLine) -> str:
        """The line's name: the manifest's `file` if given, else the template; ValueError if it would be unsafe."""
        if line.file:
            raw = line.file
            parts = PurePosixPath(raw.replace("\\", "/")).parts
            if raw.startswith(("/", "\\")) or any(p in ("..", ".") for p in parts) or re.match(r"^[A-Za-z]:", raw):
                raise ValueError(f"file {raw!r} would leave the output folder")
            stem = str(PurePosixPath(*parts).with_suffix("")) if parts else ""
        else:
            values = {k: _clean(v) for k, v in line.fields().items()}
            stem = self.template.format(**values)
        pieces = stem.split("/")
        if not stem or any(p in ("", ".", "..") for p in pieces):
            raise ValueError(f"file name {stem!r} is empty or would leave the output folder")
        if any(p.startswith(".") for p in pieces) or pieces[0] == "_takes":
            raise ValueError(f"file name {stem!r} is hidden or reserved")
        if len(stem.encode()) > 200:
            raise ValueError(f"file name {stem[:40]!r}... is longer than 200 bytes")
        return stem


def _clean(value: str) -> str:
    cleaned = _UNSAFE.sub("_", value).strip(" .")
    return cleaned or "_"


def inside(root: Path, relative: str) -> Path:
    """root/relative, refused (ValueError) if it resolves outside root (symlinks included)."""
    base = root.resolve()
    target = (base / relative).resolve()
    if base != target and base not in target.parents:
        raise ValueError(f"{relative!r} would be written outside {str(base)!r}")
    return target


def reserved(name: str) -> bool:
    return name in _RESERVED
