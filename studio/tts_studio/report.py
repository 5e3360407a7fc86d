"""The build's report: `DIR/build-report.json` (one entry per manifest line) and `DIR/build-report.html`.

The HTML page is one self-contained file (inline style and script, audio by relative path), so it opens
offline from the output folder: failed lines first, columns sortable by a click, a player per line.
"""

from __future__ import annotations

import dataclasses
import html
import json
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tts_studio.manifest import ManifestLine

if TYPE_CHECKING:
    from tts_studio.lock import LockFile
    from tts_studio.manifest import Manifest

REPORT_JSON = "build-report.json"
REPORT_HTML = "build-report.html"
_FIELDS = ("file", "timings", "vtt", "status", "take", "duration_s", "sample_rate", "lufs", "true_peak_db", "wer",
           "heard", "aligner", "error", "worker", "cached", "attempts", "seed", "synth_s")


@dataclasses.dataclass(slots=True)
class BuildReport:
    """Counts and stage costs of one run; the per-line entries are written from the lock file at the end."""

    root: Path
    total: int
    built: int = 0
    kept: int = 0
    failed: int = 0
    pruned: int = 0
    elapsed_s: float = 0.0
    costs_s: dict[str, float] = dataclasses.field(default_factory=dict)
    failures: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    built_now: set[str] = dataclasses.field(default_factory=set)  # ids synthesised this run

    @property
    def done(self) -> int:
        return self.built + self.kept + self.failed

    @property
    def exit_code(self) -> int:
        """0: every line built or kept and passed its check; 1: some failed."""
        return 1 if self.failed else 0

    def add_kept(self, rec: dict[str, Any]) -> None:
        self.kept += 1

    def add_built(self, rec: dict[str, Any], costs: dict[str, float]) -> None:
        self.built_now.add(rec["id"])
        if rec["status"] == "failed":
            self.failed += 1
            if len(self.failures) < 20:
                self.failures.append((rec["id"], rec.get("error") or "failed"))
        else:
            self.built += 1
        self.costs_s["synth_s"] = self.costs_s.get("synth_s", 0.0) + float(rec.get("synth_s") or 0.0)
        for stage, seconds in costs.items():
            self.costs_s[stage] = self.costs_s.get(stage, 0.0) + seconds

    def per_line_ms(self) -> dict[str, float]:
        """Mean cost of each stage per processed line, in milliseconds."""
        n = max(1, self.built + self.failed)
        return {stage.removesuffix("_s"): round(1000 * total / n, 1) for stage, total in sorted(self.costs_s.items())}

    def summary(self) -> dict[str, Any]:
        return {"lines": self.total, "built": self.built, "kept": self.kept, "failed": self.failed,
                "pruned": self.pruned, "elapsed_s": round(self.elapsed_s, 2), "stage_ms_per_line": self.per_line_ms()}


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def _entry(line: ManifestLine, rec: dict[str, Any], built_now: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": line.line_id, "line": line.line_no, "speaker": line.speaker, "text": line.text}
    entry.update({k: rec.get(k) for k in _FIELDS})
    if rec.get("status") == "built" and not built_now:
        entry["status"] = "kept"
    entry["takes"] = rec.get("take", 1)
    if line.extra:
        entry["extra"] = dict(line.extra)
    return entry


def write_reports(report: BuildReport, manifest: Manifest, lock: LockFile) -> None:
    """Both report files, from the manifest's order and the lock file's records (streamed, not held twice)."""
    tmp_lines = report.root / f".{REPORT_JSON}.{secrets.token_hex(6)}.tmp"
    rows: list[str] = []
    with open(tmp_lines, "w", encoding="utf-8") as out:
        out.write('{"summary": ' + json.dumps(report.summary()) + ', "lines": [\n')
        first = True
        for line in manifest.lines():
            if not isinstance(line, ManifestLine):
                continue
            rec = lock.get(line.line_id) or {"status": "failed", "error": "not built"}
            entry = _entry(line, rec, line.line_id in report.built_now)
            out.write(("" if first else ",\n") + json.dumps(entry, ensure_ascii=False))
            first = False
            rows.append(_row(entry))
        out.write("\n]}\n")
    os.replace(tmp_lines, report.root / REPORT_JSON)
    _atomic_text(report.root / REPORT_HTML, _page(report, rows))


def _row(e: dict[str, Any]) -> str:
    def cell(v: Any) -> str:
        return f"<td>{html.escape('' if v is None else str(v))}</td>"

    rank = 0 if e["status"] == "failed" else 1
    player = f'<audio controls preload="none" src="{html.escape(str(e["file"] or ""), quote=True)}"></audio>'
    return (f'<tr data-rank="{rank}">{cell(e["status"])}{cell(e["id"])}{cell(e["speaker"])}{cell(e["text"])}'
            f'{cell(e["duration_s"])}{cell(e["lufs"])}{cell(e["true_peak_db"])}{cell(e["wer"])}{cell(e["error"])}'
            f'{cell(e["worker"])}<td>{player}</td></tr>')


def _page(report: BuildReport, rows: list[str]) -> str:
    template = (Path(__file__).parent / "report.html").read_text(encoding="utf-8")
    rows.sort(key=lambda r: 0 if 'data-rank="0"' in r else 1)  # failed lines first (a stable sort)
    s = report.summary()
    head = (f"{s['lines']} lines: {s['built']} built, {s['kept']} kept, {s['failed']} failed "
            f"in {s['elapsed_s']} s")
    return template.replace("{{SUMMARY}}", html.escape(head)).replace("{{ROWS}}", "\n".join(rows))
