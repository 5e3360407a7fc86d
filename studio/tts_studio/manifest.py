"""Read a build manifest (CSV with a header, or JSONL) one line at a time, and validate it whole before a build.

A manifest line is {id, speaker, text} plus optional model, stream_index, seed, take, file and voice settings
(`voice` as a JSON object, or columns named `voice.KEY`). Any other column is kept as `extra` for the report and
never sent to an engine. A column map renames the file's columns (`id=AudioFileName`), so an Unreal dialogue
export reads as it is.

Reading streams: a 50,000-line manifest is never held in memory, only the ids and file names seen so far.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import io
import json
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

from tts_studio.errors import ManifestError, ManifestProblem
from tts_studio.naming import NameTemplate

REQUIRED = ("id", "speaker", "text")
KNOWN = {"id", "speaker", "text", "model", "stream_index", "seed", "take", "file", "voice"}


@dataclasses.dataclass(frozen=True, slots=True)
class ManifestLine:
    """One line to build: what is sent to the engine, how its file is named, and what rides along."""

    line_no: int
    line_id: str
    speaker: str
    text: str
    model: Optional[str] = None
    stream_index: str = "0"
    seed: Optional[int] = None
    take: Optional[int] = None
    file: Optional[str] = None
    voice: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def fields(self) -> dict[str, str]:
        """The values a name template may use."""
        return {"id": self.line_id, "speaker": self.speaker, "stream_index": self.stream_index,
                "model": (self.model or "").replace(":", "-")}


def _decoded_lines(path: Path) -> Iterator[tuple[int, Optional[str]]]:
    """(line number, text) for each physical line; text None where the bytes are not UTF-8."""
    decoder_factory = codecs.getincrementaldecoder("utf-8")
    with open(path, "rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            if line_no == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            try:
                yield line_no, decoder_factory().decode(raw, final=True)
            except UnicodeDecodeError:
                yield line_no, None


def _as_name(value: Any, key: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"{key!r} must be a string or an integer")
    return str(value).strip()


def _as_int(value: Any, key: str) -> Optional[int]:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise ValueError(f"{key!r} must be an integer")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key!r} must be an integer, not {str(value)[:20]!r}") from None
    if number < 0:
        raise ValueError(f"{key!r} must not be negative")
    return number


def _voice_value(raw: str) -> Any:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return raw
    return value if isinstance(value, (str, int, float, bool)) else raw


def _line(line_no: int, record: Mapping[str, Any]) -> ManifestLine:
    """A ManifestLine from one record whose keys are already mapped; ValueError says what is wrong."""
    missing = [k for k in REQUIRED if record.get(k) in (None, "")]
    text = record.get("text")
    if "text" in missing or (isinstance(text, str) and not text.strip()):
        raise ValueError("empty text")
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    if not isinstance(text, str):
        raise ValueError("'text' must be a string")
    voice: dict[str, Any] = {}
    given = record.get("voice")
    if isinstance(given, str) and given.strip():
        try:
            given = json.loads(given)
        except json.JSONDecodeError:
            raise ValueError("'voice' must be a JSON object") from None
    if given not in (None, ""):
        if not isinstance(given, dict):
            raise ValueError("'voice' must be an object")
        voice.update(given)
    extra: dict[str, Any] = {}
    for key, value in record.items():
        if key.startswith("voice.") and len(key) > 6:
            if value not in (None, ""):
                voice[key[6:]] = _voice_value(value) if isinstance(value, str) else value
        elif key not in KNOWN and key:
            extra[key] = value
    model = record.get("model")
    file = record.get("file")
    return ManifestLine(
        line_no=line_no,
        line_id=_as_name(record["id"], "id"),
        speaker=_as_name(record["speaker"], "speaker"),
        text=text.strip(),
        model=str(model).strip() if model not in (None, "") else None,
        stream_index=_as_name(record.get("stream_index") or 0, "stream_index"),
        seed=_as_int(record.get("seed"), "seed"),
        take=_as_int(record.get("take"), "take"),
        file=str(file).strip() if file not in (None, "") else None,
        voice=voice,
        extra=extra,
    )


class Manifest:
    """A manifest file: its format from the extension (.csv, .jsonl/.ndjson; else sniffed), a column map.

    `lines()` yields (ManifestLine | ManifestProblem) in file order; it can be iterated more than once (each pass
    re-reads the file), which is how a build validates everything first and then streams the work.
    """

    def __init__(self, path: Path | str, *, columns: Optional[Mapping[str, str]] = None) -> None:
        self.path = Path(path)
        #: our name -> the file's column name
        self.columns = dict(columns or {})
        self.kind = self._kind()

    def _kind(self) -> str:
        suffix = self.path.suffix.lower()
        if suffix in (".jsonl", ".ndjson", ".json"):
            return "jsonl"
        if suffix in (".csv", ".tsv", ".txt"):
            return "csv"
        with open(self.path, "rb") as handle:
            head = handle.read(64).lstrip(codecs.BOM_UTF8).lstrip()
        return "jsonl" if head.startswith(b"{") else "csv"

    def _rename(self, record: Mapping[str, Any]) -> dict[str, Any]:
        if not self.columns:
            return dict(record)
        theirs = {v: k for k, v in self.columns.items()}
        return {theirs.get(k, k): v for k, v in record.items()}

    def records(self) -> Iterator[tuple[int, Any]]:
        """(line number, mapped record dict) or (line number, ManifestProblem) in file order."""
        if self.kind == "jsonl":
            yield from self._jsonl()
        else:
            yield from self._csv()

    def _jsonl(self) -> Iterator[tuple[int, Any]]:
        for line_no, text in _decoded_lines(self.path):
            if text is None:
                yield line_no, ManifestProblem(line_no, "not valid UTF-8")
                continue
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                yield line_no, ManifestProblem(line_no, f"not valid JSON ({exc.msg} at column {exc.colno})")
                continue
            if not isinstance(obj, dict):
                yield line_no, ManifestProblem(line_no, "not a JSON object")
                continue
            yield line_no, self._rename(obj)

    def _csv(self) -> Iterator[tuple[int, Any]]:
        # csv.reader over lines we decode ourselves, so a bad byte costs one line, not the file; a quoted field
        # spanning lines is joined before parsing (the record's number is its first line's).
        header: Optional[list[str]] = None
        pending: list[str] = []
        first_no = 0
        dialect: Any = "excel-tab" if self.path.suffix.lower() == ".tsv" else "excel"
        for line_no, text in _decoded_lines(self.path):
            if text is None:
                yield line_no, ManifestProblem(line_no, "not valid UTF-8")
                pending = []
                continue
            if not pending:
                first_no = line_no
                if not text.strip():
                    continue
            pending.append(text)
            joined = "".join(pending)
            if joined.count('"') % 2:
                continue  # inside a quoted field that goes on to the next line
            pending = []
            row = next(csv.reader(io.StringIO(joined), dialect), [])
            if header is None:
                header = [self.columns_reverse(c.strip()) for c in row]
                lacking = [k for k in REQUIRED if k not in header]
                if lacking:
                    yield first_no, ManifestProblem(first_no, f"header lacks column(s) {', '.join(lacking)}"
                                                              f" (found: {', '.join(c for c in header if c)})")
                    return
                continue
            if len(row) > len(header):
                yield first_no, ManifestProblem(first_no, f"{len(row)} fields, the header has {len(header)}")
                continue
            yield first_no, dict(zip(header, row + [""] * (len(header) - len(row)), strict=True))
        if pending:
            yield first_no, ManifestProblem(first_no, "unterminated quoted field")
        if header is None:
            yield 1, ManifestProblem(1, "empty manifest: no header")

    def columns_reverse(self, name: str) -> str:
        for ours, theirs in self.columns.items():
            if theirs == name:
                return ours
        return name

    def lines(self) -> Iterator[ManifestLine | ManifestProblem]:
        for line_no, record in self.records():
            if isinstance(record, ManifestProblem):
                yield record
                continue
            try:
                yield _line(line_no, record)
            except ValueError as exc:
                yield ManifestProblem(line_no, str(exc))


def validate(manifest: Manifest, names: NameTemplate, *, known_speakers: Optional[Mapping[str, set[str]]] = None,
             default_model: Optional[str] = None) -> int:
    """Check the whole manifest before anything is synthesised; returns the number of lines.

    Raises ManifestError listing every problem with its line number: bad records, empty text, duplicate ids,
    file names that collide or leave the output folder, and (when `known_speakers` maps each connected routing
    key to its speakers; an empty set means the engine takes any speaker) speakers no connected model has.
    """
    problems: list[ManifestProblem] = []
    ids: dict[str, int] = {}
    files: dict[str, int] = {}
    count = 0
    for item in manifest.lines():
        if isinstance(item, ManifestProblem):
            problems.append(item)
            continue
        count += 1
        if item.line_id in ids:
            problems.append(ManifestProblem(item.line_no, f"duplicate id {item.line_id!r} (first on line "
                                                          f"{ids[item.line_id]})"))
            continue
        ids[item.line_id] = item.line_no
        try:
            name = names.relative(item)
        except ValueError as exc:
            problems.append(ManifestProblem(item.line_no, str(exc)))
            continue
        key = name.casefold()  # a case-insensitive file system would make these one file
        if key in files:
            problems.append(ManifestProblem(item.line_no, f"file name {name!r} collides with line {files[key]}"))
        else:
            files[key] = item.line_no
        if known_speakers is not None:
            problem = _speaker_problem(item, known_speakers, default_model)
            if problem:
                problems.append(ManifestProblem(item.line_no, problem))
    if count == 0 and not problems:
        problems.append(ManifestProblem(1, "no lines to build"))
    if problems:
        raise ManifestError(str(manifest.path), sorted(problems, key=lambda p: p.line_no))
    return count


def _speaker_problem(line: ManifestLine, known: Mapping[str, set[str]], default_model: Optional[str]) -> str:
    model = line.model or default_model
    keys = [k for k in known if model is None or k == model or k.split(":", 1)[0] == model]
    if not keys:
        return f"no connected worker serves model {model!r}" if model else ""
    for key in keys:
        speakers = known[key]
        if not speakers or line.speaker in speakers:
            return ""
    offered = sorted(set().union(*(known[k] for k in keys)))
    return f"unknown speaker {line.speaker!r} for {model or 'the connected models'} (known: {', '.join(offered)})"
