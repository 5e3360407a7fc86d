"""`tts`: run a local stack, synthesise lines and batches, and look at the broker.

Exit codes: 0 ok, 1 a job failed (also: no worker serves the model, every told worker failed to reload),
2 usage error (bad URL, options, empty text, unwritable output folder), 3 broker unavailable, 4 (`tts health`)
the broker answers but no connected worker serves the model, 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

import click
from pydantic import ValidationError

from tts_protocol import DEFAULT_BACKEND, DEFAULT_FRONTEND, Priority
from tts_protocol.settings_help import add_settings_help

from tts_client import __version__, cli_admin
from tts_client.audio import (
    FORMATS,
    check_format,
    check_writable_dir,
    line_output_path,
    output_format,
    save_result,
)
from tts_client.batchfile import read_batch
from tts_client.batchrun import BatchDefaults, run_batch
from tts_client.cli_common import (
    EXIT_INTERRUPTED,
    EXIT_JOB_FAILED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    client_for,
    fail,
    handle_errors,
    parse_options,
    require_broker,
    require_route,
)
from tts_client.cli_tables import render_jobs, render_status  # noqa: F401 (re-exported)
from tts_client.client import TtsClient
from tts_client.errors import (
    InvalidRequest,
    TtsClientError,
)
from tts_client.jobspec import new_job_id
from tts_client.launcher import LocalStack, StackConfig, StopSignal, client_endpoint
from tts_client.results import SynthesisResult
from tts_client.settings import ClientSettings


class LazyCommands(click.Group):
    """The `tts` group, plus commands that live in other packages and are imported only when run or listed
    in --help: `tts gateway` is the gateway's (tts_gateway.cli), `tts bridge` the bridges' (tts_bridge.cli), so
    `tts say` never imports them."""

    lazy = {  # name -> (module, attribute, extra)
        "gateway": ("tts_gateway.cli", "gateway", "gateway"),
        "bridge": ("tts_bridge.cli", "bridge", "bridges"),  # each bridge names the extra when its library is missing
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, cmd_name: str) -> Optional[click.Command]:
        if cmd_name not in self.lazy:
            return super().get_command(ctx, cmd_name)
        module_name, attribute, extra = self.lazy[cmd_name]
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            fail(f"`tts {cmd_name}` needs its extra: pip install 'tts-broker[{extra}]' ({exc})", EXIT_USAGE)
        command: click.Command = getattr(module, attribute)
        return command


@click.group(cls=LazyCommands, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="tts")
@click.option("--broker", "broker_url", envvar="TTS_BROKER_URL",
              help="Broker frontend URL, or a comma-separated list (failover).")
@click.option("--timeout-s", type=float, help="Per-job timeout in seconds (0 = none).")
@click.option("--log-level", default="WARNING", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"],
                                                                  case_sensitive=False))
@click.option("--curve-secret", type=click.Path(dir_okay=False),
              help="This client's CURVE key pair (NAME.key_secret).")
@click.option("--broker-key", type=click.Path(dir_okay=False),
              help="The broker's CURVE public key (NAME.key).")
@click.pass_context
def main(ctx: click.Context, broker_url: Optional[str], timeout_s: Optional[float], log_level: str,
         curve_secret: Optional[str], broker_key: Optional[str]) -> None:
    """Speak text through a tts-broker: `tts up` starts a local stack, `tts say` speaks a line."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides: dict[str, Any] = {}
    if broker_url:
        overrides["broker_url"] = broker_url
    if timeout_s is not None:
        overrides["timeout_s"] = timeout_s
    if curve_secret:
        overrides["curve_secret"] = curve_secret
    if broker_key:
        overrides["broker_key"] = broker_key
    if ctx.invoked_subcommand == "keys":
        return  # key files are made before any CURVE setting can be valid
    try:
        ctx.obj = ClientSettings(**overrides)
    except ValidationError as exc:
        fail("; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors()), EXIT_USAGE)


# ---- tts keys --------------------------------------------------------------------------------------


# ---- tts up ----------------------------------------------------------------------------------------


@main.command()
@click.option("--workers", type=click.IntRange(1, 256), default=2, envvar="CONCURRENT_REQUESTS",
              show_envvar=True, help="Worker processes to start.")
@click.option("--engine", default="piper", envvar="TTS_ENGINE", show_envvar=True,
              help="Engine the workers load (tone, piper, fish-speech).")
@click.option("--engine-opt", "engine_opts", multiple=True, metavar="KEY=VALUE", help="Engine option (repeatable).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), help="Device for the workers.")
@click.option("--frontend", default=DEFAULT_FRONTEND, help="Endpoint the broker binds for clients.")
@click.option("--backend", default=DEFAULT_BACKEND, help="Endpoint the broker binds for workers.")
@click.option("--drain-grace-s", type=float, default=30.0, help="On stop, how long running jobs may finish.")
@click.option("--broker-opt", "broker_opts", multiple=True, metavar="FLAG=VALUE",
              help="Extra broker flag, e.g. max-queue=500 (repeatable).")
@click.option("--child-log-level", default="INFO", help="Log level of the broker and workers.")
@click.option("--gateway", "gateway_listen", metavar="HOST:PORT",
              help="Also start the HTTP gateway (`tts gateway`) listening here.")
@click.option("--http", "http_listen", metavar="HOST:PORT", default="127.0.0.1:0",
              help="Where the broker serves its dashboard, /metrics and /api/status (port 0 = a free one).")
@click.option("--no-http", is_flag=True, help="Do not start the broker's HTTP side.")
@click.option("--ready-file", type=click.Path(dir_okay=False),
              help="Once the broker is up, write its broker_id, endpoints and dashboard here as JSON (so a script "
                   "can check it talks to this stack's broker, not another one on the same port).")
def up(workers: int, engine: str, engine_opts: tuple[str, ...], device: Optional[str], frontend: str, backend: str,
       drain_grace_s: float, broker_opts: tuple[str, ...], child_log_level: str,
       gateway_listen: Optional[str], http_listen: str, no_http: bool, ready_file: Optional[str]) -> None:
    """Run a broker and WORKERS workers in the foreground until Ctrl-C or SIGTERM (then drain and stop)."""
    parse_options(engine_opts)  # reject malformed pairs before starting anything
    if gateway_listen is not None:
        from tts_gateway.settings import parse_listen

        try:
            parse_listen(gateway_listen)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--gateway") from exc
    broker_args: list[str] = []
    for opt in broker_opts:
        flag, sep, value = opt.partition("=")
        if not sep:
            raise click.BadParameter(f"expected FLAG=VALUE, got {opt!r}", param_hint="--broker-opt")
        broker_args += [f"--{flag.lstrip('-')}", value]
    if not no_http and "--http" not in broker_args:
        broker_args += ["--http", http_listen]
    stack = LocalStack(StackConfig(frontend=frontend, backend=backend, workers=workers, engine=engine,
                                   engine_opts=list(engine_opts), device=device, broker_args=broker_args,
                                   log_level=child_log_level.upper(), drain_grace_s=drain_grace_s,
                                   gateway=gateway_listen))
    stop = StopSignal()
    stop.install()
    note = functools.partial(_say, fg="cyan")
    code = EXIT_OK
    try:
        ready = stack.start_broker()
        note(f"broker {ready.get('broker_id', '?')} listening: clients {frontend}, workers {backend}")
        if ready.get("http"):
            note(f"dashboard {ready['http']}  (metrics {ready['http']}metrics, status {ready['http']}api/status)")
        if ready_file is not None:
            _write_json_atomically(Path(ready_file), {**ready, "up_pid": os.getpid()})
        stack.start_workers()
        note(f"starting {workers} {engine} worker(s); `tts --broker {client_endpoint(frontend)} status` shows them")
        served = stack.start_gateway()
        if served is not None:
            note(f"gateway listening on {served['url']} (POST /v1/audio/speech)")
        code = _watch(stack, stop, client_endpoint(frontend), workers)
    except RuntimeError as exc:
        _say(f"tts up: {exc}", fg="red")
        code = EXIT_JOB_FAILED
    finally:
        stack.stop(on_step=note)
        note("stopped")
    sys.exit(code)


def _write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


def _say(message: str, **style: Any) -> None:
    """A note on stderr that survives a closed pipe (`tts up 2>&1 | tee log` after Ctrl-C killed tee).

    A failed write must not abort the orderly stop of the children, so on EPIPE stdout and stderr are pointed
    at /dev/null (Python's flush at exit then succeeds too) and the notes stop.
    """
    try:
        click.secho(message, err=True, **style)
    except OSError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        for stream in (sys.stdout, sys.stderr):
            try:
                os.dup2(devnull, stream.fileno())
            except (OSError, ValueError):
                pass
        os.close(devnull)


def _watch(stack: LocalStack, stop: StopSignal, url: str, expected: int) -> int:
    """Wait for a stop signal or a child's death; say once when every worker has registered."""
    announced = False
    with TtsClient(url, request_timeout_s=1.0) as client:
        while not stop.event.wait(0.5):
            gone = stack.exited()
            if gone is not None:
                _say(f"tts up: the {gone[0]} exited with code {gone[1]}; stopping", fg="red")
                return EXIT_JOB_FAILED
            if not announced:
                try:
                    registered = client.broker_status().worker_count
                except TtsClientError:
                    continue
                if registered >= expected:
                    announced = True
                    _say(f"{registered} worker(s) ready; Ctrl-C to stop", fg="green")
    return EXIT_OK


# ---- tts say ---------------------------------------------------------------------------------------


@main.command()
@click.argument("text")
@click.option("--speaker", help="Speaker / voice name.")
@click.option("--output-dir", type=click.Path(file_okay=False), help="Folder for {stream_index}_{id}.{format}.")
@click.option("-o", "--output", "output_file", type=click.Path(dir_okay=False),
              help="Exact output file (format from its extension); overrides --output-dir.")
@click.option("--format", "fmt", type=click.Choice(sorted(FORMATS)),
              help="Audio format.")
@click.option("--model", help="Routing key: ENGINE or ENGINE:MODEL.")
@click.option("--id", "line_id", help="Line id for the file name (default: the job id).")
@click.option("--stream-index", default="0", help="Stream index for the file name.")
@click.option("--voice", "voice_opts", multiple=True, metavar="KEY=VALUE", help="Engine voice setting (repeatable).")
@click.option("--stream", is_flag=True, help="Stream chunks while synthesising (reports time to first audio).")
@click.pass_context
@handle_errors
def say(ctx: click.Context, text: str, speaker: Optional[str], output_dir: Optional[str],
        output_file: Optional[str], fmt: Optional[str], model: Optional[str], line_id: Optional[str],
        stream_index: str, voice_opts: tuple[str, ...], stream: bool) -> None:
    """Synthesise TEXT into one audio file; prints its path, then timings on stderr."""
    settings: ClientSettings = ctx.obj
    if not text.strip():
        raise InvalidRequest("bad_request: text is empty or only whitespace; nothing to synthesise")
    voice = parse_options(voice_opts)
    job_id = new_job_id("say")
    if output_file is not None:
        target = Path(output_file)
        fmt = output_format(target, fmt, settings.output_format)
    else:
        fmt = check_format(fmt or settings.output_format)
        target = line_output_path(output_dir or settings.output_dir, stream_index, line_id or job_id, fmt)
    check_writable_dir(target.parent)
    client = client_for(ctx)
    require_broker(client)
    require_route(client, model or settings.model)
    started = time.perf_counter()
    first_audio_ms: Optional[float] = None
    if stream:
        job = client.stream(text, job_id=job_id, speaker=speaker, model=model, voice=voice)
        for _chunk in job:
            if first_audio_ms is None:
                first_audio_ms = (time.perf_counter() - started) * 1000
        result = job.result
    else:
        result = client.synthesize(text, job_id=job_id, speaker=speaker, model=model, voice=voice)
    wall_ms = (time.perf_counter() - started) * 1000
    path = save_result(result, target, fmt)
    click.echo(str(path))
    click.echo(_timing_line(result, wall_ms, first_audio_ms), err=True)


def _timing_line(result: SynthesisResult, wall_ms: float, first_audio_ms: Optional[float]) -> str:
    meta = result.meta
    parts = [f"{result.duration_s:.2f}s of audio in {wall_ms:.0f} ms",
             f"gen {meta.gen_time_ms} ms", f"queue {meta.queue_time_ms} ms"]
    if first_audio_ms is not None:
        parts.append(f"first audio {first_audio_ms:.0f} ms")
    parts.append(f"{meta.engine}{':' + meta.model if meta.model else ''} on {meta.worker_id}")
    return click.style(", ".join(parts), dim=True)


# ---- tts batch -------------------------------------------------------------------------------------


@main.command()
@click.argument("jsonl", type=click.File("r", encoding="utf-8"))
@click.option("--output-dir", type=click.Path(file_okay=False), help="Folder for the audio files.")
@click.option("--format", "fmt", type=click.Choice(sorted(FORMATS)), help="Audio format.")
@click.option("--model", help="Routing key for every line: ENGINE or ENGINE:MODEL.")
@click.option("--speaker", help="Speaker for lines that name none.")
@click.option("--voice", "voice_opts", multiple=True, metavar="KEY=VALUE",
              help="Engine voice setting for every line (a line's own \"voice\" wins; repeatable).")
@click.option("--priority", type=click.Choice([p.value for p in Priority]), default="normal",
              help="Queue priority of every line's job.")
@click.option("--overwrite", is_flag=True, help="Synthesise lines whose output file exists (default: skip them).")
@click.option("--max-in-flight", type=click.IntRange(1, 100_000), help="Jobs submitted at once.")
@click.pass_context
@handle_errors
def batch(ctx: click.Context, jsonl: Any, output_dir: Optional[str], fmt: Optional[str], model: Optional[str],
          speaker: Optional[str], voice_opts: tuple[str, ...], priority: str, overwrite: bool,
          max_in_flight: Optional[int]) -> None:
    """Synthesise every line of JSONL ({"text", "speaker", "id"} per line) into --output-dir.

    Each line's job id is derived from the file, the line's id and its content (`tts jobs` shows it), so a
    rerun into the same folder skips the lines already written. Ctrl-C cancels this batch's unfinished jobs.
    """
    settings: ClientSettings = ctx.obj
    fmt = check_format(fmt or settings.output_format)
    directory = Path(output_dir or settings.output_dir)
    defaults = BatchDefaults(speaker=speaker, voice=parse_options(voice_opts), model=model or settings.model,
                             priority=priority)
    lines, bad = read_batch(jsonl, fmt)
    for b in bad:
        click.secho(f"{jsonl.name}:{b.line_no}: skipped: {b.reason}", fg="yellow", err=True)
    check_writable_dir(directory)
    client = client_for(ctx)
    if lines:
        require_broker(client)
        require_route(client, defaults.model)
    started = time.perf_counter()
    with click.progressbar(length=len(lines), label="synthesising", file=sys.stderr) as bar:
        outcome = run_batch(client, jsonl.name, lines, directory, fmt, defaults,
                            max_in_flight=max_in_flight or settings.max_in_flight, overwrite=overwrite,
                            progress=bar.update)
    elapsed = time.perf_counter() - started
    failures = outcome.failures
    for line, exc in failures:
        click.secho(f"{jsonl.name}:{line.line_no} (id {line.line_id}): failed: {exc}", fg="red", err=True)
    colour = "green" if not failures and not bad and not outcome.interrupted else "red"
    rate = outcome.written / elapsed if elapsed > 0 else 0.0
    extra = f", {outcome.skipped} already written" if outcome.skipped else ""
    if outcome.not_run:
        extra += f", {outcome.not_run} not run"
    click.secho(f"{outcome.written} written, {len(failures)} failed, {len(bad)} bad lines{extra} in {elapsed:.1f}s "
                f"({rate:.1f} lines/s) -> {directory}", fg=colour, err=True)
    if outcome.interrupted:
        click.secho(f"interrupted: cancelled {outcome.cancelled} unfinished job(s); rerun to do the rest",
                    fg="red", err=True)
        sys.exit(EXIT_INTERRUPTED)
    if outcome.broker_lost:
        click.secho("the broker stopped answering; rerun once it is back (written lines are skipped)", fg="red",
                    err=True)
        sys.exit(EXIT_UNAVAILABLE)
    if failures or bad:
        sys.exit(EXIT_JOB_FAILED)


# ---- tts build (studio/tts_studio, extra `build`; loaded only when asked for) ----------------------


@main.command("build", add_help_option=False,
              context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def build(ctx: click.Context) -> None:
    """Build voice lines from a manifest: loudness, word timings, checks (extra `build`; `tts build --help`)."""
    try:
        from tts_studio.cli import build as command
    except ImportError:
        fail("tts build needs the build extra: pip install 'tts-broker[build]'", EXIT_USAGE)
        return
    command.main(args=ctx.args, prog_name="tts build", obj=ctx.obj)


# ---- tts status / ping / reload --------------------------------------------------------------------


for _command in cli_admin.COMMANDS:
    main.add_command(_command)

# Each command's flags that a ClientSettings field (TTS_CLIENT_*) fills when not given.
add_settings_help(main, ClientSettings)
for _command in (say, batch, cli_admin.get, cli_admin.health):
    add_settings_help(_command, ClientSettings, fields={"fmt": "output_format"})
