"""`tts build MANIFEST -o DIR`: the command line of the build (loaded by `tts` only when `build` is asked for).

Exit codes: 0 every line built (or kept) and passed its check, 1 some lines failed, 2 a bad manifest or
options (nothing built or touched), 3 broker unavailable.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Optional

import click

from tts_client.audio import FORMATS
from tts_client.cli_common import EXIT_USAGE, client_for, fail, handle_errors, require_broker
from tts_client.settings import ClientSettings
from tts_studio.builder import LOUDNESS_PRESETS, Builder, BuildOptions
from tts_studio.errors import BuildSetupError, ManifestError
from tts_studio.process import ProcessSettings
from tts_studio.report import REPORT_HTML, REPORT_JSON


def _pairs(values: tuple[str, ...], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key.strip() or not rest.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {value!r}", param_hint=what)
        out[key.strip()] = rest.strip()
    return out


@click.command("build")
@click.argument("manifest", type=click.Path(dir_okay=False, exists=True))
@click.option("-o", "--output-dir", required=True, type=click.Path(file_okay=False), help="Folder for the lines.")
@click.option("--column", "columns", multiple=True, metavar="OURS=THEIRS",
              help="Read column THEIRS as OURS (id, speaker, text, ...), e.g. --column text=SpokenDialogue.")
@click.option("--name", "name_template", default="{stream_index}_{id}",
              help="File name template: {id} {speaker} {stream_index} {model}; / makes folders.")
@click.option("--format", "fmt", type=click.Choice(sorted(FORMATS)), default="wav", help="Audio format.")
@click.option("--sample-rate", type=click.IntRange(8000, 192000), help="Output rate (default: the engine's).")
@click.option("--model", help="Routing key for lines that name none: ENGINE or ENGINE:MODEL.")
@click.option("--lufs", type=float, help="Integrated loudness target (default -23, the ebu preset).")
@click.option("--loudness-preset", type=click.Choice(sorted(LOUDNESS_PRESETS)), help="ebu -23, console -24, "
              "mobile -18, web -16 LUFS.")
@click.option("--true-peak", "true_peak_db", type=float, default=-1.0, help="True-peak ceiling in dBTP.")
@click.option("--pad-ms", type=click.FloatRange(0, 5000), default=100.0, help="Silence kept at head and tail.")
@click.option("--retries", type=click.IntRange(0, 20), default=2, help="New seeds for a line that fails its check.")
@click.option("--max-wer", type=click.FloatRange(0, 10), default=0.6,
              help="Word error rate above which a line fails its check.")
@click.option("--check-lm", type=click.Choice(["script", "general"]), default="script",
              help="Recogniser vocabulary: the manifest's own words, or pocketsphinx's general English model.")
@click.option("--no-check", is_flag=True, help="Skip the speech check (loudness and timings still run).")
@click.option("--no-timings", is_flag=True, help="Skip word timings.")
@click.option("--retake", multiple=True, metavar="ID", help="Make a new take of line ID (earlier takes kept).")
@click.option("--pick", "picks", multiple=True, metavar="ID=TAKE", help="Choose take TAKE of line ID.")
@click.option("--prune", is_flag=True, help="Remove files of lines no longer in the manifest.")
@click.option("--max-in-flight", type=click.IntRange(1, 10_000), default=16, help="Synthesis jobs at once.")
@click.option("--jobs", "pool_size", type=click.IntRange(1, 256), help="Post-processing processes (default: CPUs).")
@click.pass_context
@handle_errors
def build(ctx: click.Context, manifest: str, output_dir: str, columns: tuple[str, ...], name_template: str,
          fmt: str, sample_rate: Optional[int], model: Optional[str], lufs: Optional[float],
          loudness_preset: Optional[str], true_peak_db: float, pad_ms: float, retries: int, max_wer: float,
          check_lm: str, no_check: bool, no_timings: bool, retake: tuple[str, ...], picks: tuple[str, ...], prune: bool,
          max_in_flight: int, pool_size: Optional[int]) -> None:
    """Build the voice lines of MANIFEST (CSV or JSONL: id, speaker, text, ...) into -o DIR, incrementally."""
    settings: ClientSettings = ctx.obj
    if lufs is not None and loudness_preset is not None:
        raise click.UsageError("give --lufs or --loudness-preset, not both")
    target = lufs if lufs is not None else LOUDNESS_PRESETS[loudness_preset or "ebu"]
    try:
        pick = {k: int(v) for k, v in _pairs(picks, "--pick").items()}
    except ValueError as exc:
        raise click.BadParameter("TAKE must be a number", param_hint="--pick") from exc
    process = ProcessSettings(lufs=target, true_peak_db=true_peak_db, pad_ms=pad_ms, fmt=fmt,
                              sample_rate=sample_rate, max_wer=max_wer, check=not no_check, check_lm=check_lm,
                              timings=not no_timings)
    options = BuildOptions(process=process, name_template=name_template, columns=_pairs(columns, "--column"),
                           model=model or settings.model, retries=retries, max_in_flight=max_in_flight,
                           pool_size=pool_size or max(1, os.cpu_count() or 1), prune=prune, retake=retake,
                           pick=pick)
    client = client_for(ctx)
    require_broker(client)
    bar: Any = None

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.update(done - bar.pos)

    try:
        builder = Builder(client, manifest, output_dir, options, on_progress=progress)
        total = builder.validate()
        with click.progressbar(length=total, label="building", file=sys.stderr) as bar:
            report = builder.run(total)
    except ManifestError as exc:
        for line in exc.lines():
            click.secho(line, fg="red", err=True)
        fail(str(exc), EXIT_USAGE)
        return
    except BuildSetupError as exc:
        fail(str(exc), EXIT_USAGE)
        return
    _summary(report, Path(output_dir))
    sys.exit(report.exit_code)


def _summary(report: Any, root: Path) -> None:
    s = report.summary()
    colour = "red" if report.failed else "green"
    click.secho(f"{s['lines']} lines: {s['built']} built, {s['kept']} kept, {s['failed']} failed, "
                f"{s['pruned']} pruned in {s['elapsed_s']} s", fg=colour, err=True)
    if s["stage_ms_per_line"]:
        click.echo("ms per line: " + ", ".join(f"{k} {v}" for k, v in s["stage_ms_per_line"].items()), err=True)
    for line_id, why in report.failures[:10]:
        click.secho(f"  failed {line_id}: {why}", fg="red", err=True)
    if report.failed > 10:
        click.secho(f"  ... and {report.failed - 10} more (see the report)", fg="red", err=True)
    click.echo(f"report: {root / REPORT_JSON}, {root / REPORT_HTML}", err=True)
