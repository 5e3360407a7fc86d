"""`tts`: run a local stack, synthesise lines and batches, and look at the broker.

Exit codes: 0 ok, 1 a job failed (also: no worker serves the model, every told worker failed to reload),
2 usage error (bad URL, options, empty text, unwritable output folder), 3 broker unavailable, 4 (`tts health`)
the broker answers but no connected worker serves the model.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import click
from pydantic import ValidationError

from tts_protocol import DEFAULT_BACKEND, DEFAULT_FRONTEND
from tts_protocol.constants import JobState
from tts_protocol.curve import CurveKeyError, generate
from tts_protocol.messages import JobView, StatusView
from tts_protocol.views import status_document

from tts_client import __version__
from tts_client.audio import (
    FORMATS,
    check_format,
    check_writable_dir,
    format_for_path,
    line_output_path,
    save_line,
    save_result,
)
from tts_client.batchfile import BatchLine, read_batch
from tts_client.client import JobHandle, TtsClient
from tts_client.errors import (
    BrokerUnavailable,
    ClientTimeout,
    InvalidRequest,
    JobFailed,
    NoWorkers,
    RemoteError,
    TtsClientError,
    UnsafePath,
)
from tts_client.jobspec import new_job_id
from tts_client.launcher import LocalStack, StackConfig, StopSignal, client_endpoint
from tts_client.results import SynthesisResult
from tts_client.settings import ClientSettings

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_UNHEALTHY = 4

F = TypeVar("F", bound=Callable[..., Any])


def parse_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    """`key=value` pairs; values that read as JSON scalars (1, 0.5, true, null) keep that type."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected key=value, got {pair!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        options[key.strip()] = value if isinstance(value, (str, int, float, bool, type(None))) else raw
    return options


def _fail(message: str, code: int) -> None:
    click.echo(click.style(f"tts: {message}", fg="red"), err=True)
    sys.exit(code)


def handle_errors(func: F) -> F:
    """Map client errors to the documented exit codes."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BrokerUnavailable as exc:
            _fail(str(exc), EXIT_UNAVAILABLE)
        except (InvalidRequest, UnsafePath) as exc:
            _fail(str(exc), EXIT_USAGE)
        except (JobFailed, RemoteError, ClientTimeout, NoWorkers) as exc:
            _fail(str(exc), EXIT_JOB_FAILED)
        except TtsClientError as exc:
            _fail(str(exc), EXIT_JOB_FAILED)
        except OSError as exc:  # writing the audio file: one line, not a traceback
            _fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc), EXIT_JOB_FAILED)

    return wrapper  # type: ignore[return-value]


def _client(ctx: click.Context) -> TtsClient:
    settings: ClientSettings = ctx.obj
    client = TtsClient(settings=settings)
    ctx.call_on_close(client.close)
    return client


def _require_broker(client: TtsClient) -> None:
    """Fail fast (exit 3) instead of waiting a whole job timeout for a broker that is not there."""
    client.ping()


def _require_route(client: TtsClient, model: Optional[str]) -> None:
    """Fail fast with no_workers when workers are connected but none serves `model` (ENGINE or ENGINE:MODEL).

    Checked here rather than by a broker-side timeout, since a broker may rightly hold a job for a worker
    that is still starting; with no worker connected at all the job waits (the broker's unroutable_timeout_s
    applies) and we say so on stderr. A job that names no model goes to the broker's default and is not checked.
    """
    if not model:
        return
    workers = client.broker_status().workers
    if not workers:
        click.secho(f"tts: no worker is connected yet; the job waits for one serving {model}", fg="yellow",
                    err=True)
        return
    served: set[str] = set()
    for w in workers:
        served.add(w.engine)
        if w.model:
            served.add(f"{w.engine}:{w.model}")
    if model not in served:
        connected = sorted({f"{w.engine}:{w.model}" if w.model else w.engine for w in workers})
        raise NoWorkers(f"no_workers: no connected worker serves {model!r}; connected: {', '.join(connected)}",
                        connected=connected)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="tts")
@click.option("--broker", "broker_url", envvar="TTS_BROKER_URL", help="Broker frontend URL [env TTS_BROKER_URL].")
@click.option("--timeout-s", type=float, help="Per-job timeout in seconds (0 = none) [env TTS_CLIENT_TIMEOUT_S].")
@click.option("--log-level", default="WARNING", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"],
                                                                  case_sensitive=False))
@click.option("--curve-secret", type=click.Path(dir_okay=False),
              help="This client's CURVE key pair (NAME.key_secret) [env TTS_CLIENT_CURVE_SECRET].")
@click.option("--broker-key", type=click.Path(dir_okay=False),
              help="The broker's CURVE public key (NAME.key) [env TTS_CLIENT_BROKER_KEY].")
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
        _fail("; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors()), EXIT_USAGE)


# ---- tts keys --------------------------------------------------------------------------------------


@main.group()
def keys() -> None:
    """CURVE key files for the broker, workers and clients (docs/security.md)."""


@keys.command("generate")
@click.argument("name")
@click.option("--dir", "folder", required=True, type=click.Path(file_okay=False),
              help="Folder to write NAME.key (public) and NAME.key_secret (keep private) into.")
def keys_generate(name: str, folder: str) -> None:
    """Write DIR/NAME.key and DIR/NAME.key_secret, a new CURVE key pair (pyzmq certificate files)."""
    try:
        public, secret = generate(name, folder)
    except CurveKeyError as exc:
        _fail(str(exc), EXIT_USAGE)
    click.echo(f"public key: {public}  (copy to the broker's allowlist folder, or to peers as --broker-key)")
    click.echo(f"secret key: {secret}  (mode 0600; stays on this host)")


# ---- tts up ----------------------------------------------------------------------------------------


@main.command()
@click.option("--workers", type=click.IntRange(1, 256), default=2, envvar="CONCURRENT_REQUESTS",
              help="Worker processes to start [env CONCURRENT_REQUESTS].")
@click.option("--engine", default="piper", envvar="TTS_ENGINE",
              help="Engine the workers load (tone, piper, fish-speech) [env TTS_ENGINE].")
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
def up(workers: int, engine: str, engine_opts: tuple[str, ...], device: Optional[str], frontend: str, backend: str,
       drain_grace_s: float, broker_opts: tuple[str, ...], child_log_level: str,
       gateway_listen: Optional[str], http_listen: str, no_http: bool) -> None:
    """Run a broker and WORKERS workers in the foreground until Ctrl-C or SIGTERM (then drain and stop)."""
    parse_options(engine_opts)  # reject malformed pairs before starting anything
    if gateway_listen is not None:
        from tts_client.gateway.settings import parse_listen

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
                    registered = len(client.broker_status().workers)
                except TtsClientError:
                    continue
                if registered >= expected:
                    announced = True
                    _say(f"{registered} worker(s) ready; Ctrl-C to stop", fg="green")
    return EXIT_OK


# ---- tts gateway -----------------------------------------------------------------------------------


@main.command()
@click.option("--listen", help="HOST:PORT to bind; port 0 picks a free one [env TTS_GATEWAY_LISTEN, 127.0.0.1:8000].")
@click.option("--broker", "gateway_broker", help="Broker frontend (default: tts --broker) [env TTS_GATEWAY_BROKER].")
@click.option("--api-key-file", type=click.Path(dir_okay=False, exists=True),
              help="Accepted bearer tokens, one per line [env TTS_GATEWAY_API_KEY_FILE].")
@click.option("--ready-file", type=click.Path(dir_okay=False), help="Write the bound URL here as JSON once ready.")
@click.pass_context
def gateway(ctx: click.Context, listen: Optional[str], gateway_broker: Optional[str], api_key_file: Optional[str],
            ready_file: Optional[str]) -> None:
    """Serve OpenAI's POST /v1/audio/speech (plus /v1/models, /v1/audio/voices, /health) over HTTP."""
    try:
        from tts_client.gateway.server import serve
        from tts_client.gateway.settings import GatewaySettings
    except ImportError as exc:
        _fail(f"the gateway needs its extra: pip install -e '.[gateway]' in the tts-broker checkout ({exc})",
              EXIT_USAGE)
    given = {"listen": listen, "broker": gateway_broker, "api_key_file": api_key_file, "ready_file": ready_file}
    overrides: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    try:
        settings = GatewaySettings(**overrides)
        settings.host_port()
        settings.tokens()
    except (ValueError, OSError) as exc:  # pydantic's ValidationError is a ValueError; OSError: the key file
        raise click.UsageError(str(exc)) from exc
    try:
        serve(settings, ctx.obj, on_listening=lambda url: click.secho(f"gateway listening on {url}", fg="cyan",
                                                                      err=True))
    except OSError as exc:
        _fail(f"gateway: cannot listen on {settings.listen}: {exc}", EXIT_JOB_FAILED)


# ---- tts say ---------------------------------------------------------------------------------------


@main.command()
@click.argument("text")
@click.option("--speaker", help="Speaker / voice name.")
@click.option("--output-dir", type=click.Path(file_okay=False), help="Folder for {stream_index}_{id}.{format}.")
@click.option("-o", "--output", "output_file", type=click.Path(dir_okay=False),
              help="Exact output file (format from its extension); overrides --output-dir.")
@click.option("--format", "fmt", type=click.Choice(sorted(FORMATS)),
              help="Audio format [env TTS_CLIENT_OUTPUT_FORMAT].")
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
        fmt = check_format(fmt) if fmt else format_for_path(target, settings.output_format)
    else:
        fmt = check_format(fmt or settings.output_format)
        target = line_output_path(output_dir or settings.output_dir, stream_index, line_id or job_id, fmt)
    check_writable_dir(target.parent)
    client = _client(ctx)
    _require_broker(client)
    _require_route(client, model or settings.model)
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
@click.option("--max-in-flight", type=click.IntRange(1, 100_000), help="Jobs submitted at once.")
@click.pass_context
@handle_errors
def batch(ctx: click.Context, jsonl: Any, output_dir: Optional[str], fmt: Optional[str], model: Optional[str],
          max_in_flight: Optional[int]) -> None:
    """Synthesise every line of JSONL ({"text", "speaker", "id"} per line) into --output-dir."""
    settings: ClientSettings = ctx.obj
    fmt = check_format(fmt or settings.output_format)
    directory = Path(output_dir or settings.output_dir)
    lines, bad = read_batch(jsonl, fmt)
    for b in bad:
        click.secho(f"{jsonl.name}:{b.line_no}: skipped: {b.reason}", fg="yellow", err=True)
    check_writable_dir(directory)
    client = _client(ctx)
    if lines:
        _require_broker(client)
        _require_route(client, model or settings.model)
    started = time.perf_counter()
    failures = _run_batch(client, lines, directory, fmt, model, max_in_flight or settings.max_in_flight)
    elapsed = time.perf_counter() - started
    for line, exc in failures:
        click.secho(f"{jsonl.name}:{line.line_no} (id {line.line_id}): failed: {exc}", fg="red", err=True)
    ok = len(lines) - len(failures)
    colour = "green" if not failures and not bad else "red"
    rate = ok / elapsed if elapsed > 0 else 0.0
    click.secho(f"{ok} written, {len(failures)} failed, {len(bad)} bad lines in {elapsed:.1f}s "
                f"({rate:.1f} lines/s) -> {directory}", fg=colour, err=True)
    if failures and ok == 0 and all(isinstance(exc, BrokerUnavailable) for _, exc in failures):
        sys.exit(EXIT_UNAVAILABLE)
    if failures or bad:
        sys.exit(EXIT_JOB_FAILED)


def _run_batch(client: TtsClient, lines: list[BatchLine], directory: Path, fmt: str, model: Optional[str],
               max_in_flight: int) -> list[tuple[BatchLine, BaseException]]:
    failures: list[tuple[BatchLine, BaseException]] = []
    in_flight: dict[Future, tuple[BatchLine, JobHandle]] = {}
    todo = iter(lines)
    with click.progressbar(length=len(lines), label="synthesising", file=sys.stderr) as bar:
        exhausted = False
        while in_flight or not exhausted:
            while not exhausted and len(in_flight) < max_in_flight:
                line = next(todo, None)
                if line is None:
                    exhausted = True
                    break
                handle = client.submit(line.text, speaker=line.speaker, model=model, voice=line.voice)
                in_flight[handle.future] = (line, handle)
            if not in_flight:
                break
            done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
            for future in done:
                line, handle = in_flight.pop(future)
                try:
                    save_line(handle.result(), directory, line.stream_index, line.line_id, fmt)
                except Exception as exc:
                    failures.append((line, exc))
                bar.update(1)
    return failures


# ---- tts status / ping / reload --------------------------------------------------------------------


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the broker's status view as JSON.")
@click.option("--watch", is_flag=True, help="Refresh until Ctrl-C (with --json: one JSON document per line).")
@click.option("--interval-s", type=click.FloatRange(0.1, 3600), default=1.0, help="Refresh period of --watch.")
@click.pass_context
@handle_errors
def status(ctx: click.Context, as_json: bool, watch: bool, interval_s: float) -> None:
    """Workers (state, jobs, mean generation time, memory) and the queue."""
    client = _client(ctx)
    if not watch:
        view = client.broker_status()
        click.echo(json.dumps(status_document(view), indent=2) if as_json else render_status(view))
        return
    stop = StopSignal()
    stop.install()
    while True:
        try:
            view = client.broker_status()
        except (BrokerUnavailable, ClientTimeout) as exc:
            shown = click.style(f"broker unavailable: {exc}", fg="red")
            click.echo(json.dumps({"error": str(exc)}) if as_json else _screen(shown), nl=as_json)
        else:
            if as_json:
                click.echo(json.dumps(status_document(view)))
            else:
                click.echo(_screen(render_status(view) + "\n" + click.style(
                    f"every {interval_s:g}s; Ctrl-C to stop", dim=True)), nl=False)
        if stop.event.wait(interval_s):
            return


def _screen(text: str) -> str:
    """Text that replaces the terminal's contents (cursor home, clear) when stdout is a terminal."""
    return ("\x1b[H\x1b[2J" if sys.stdout.isatty() else "") + text + "\n"


def render_status(view: StatusView) -> str:
    """A coloured table of the workers, then queue and job counters."""
    headers = ["WORKER", "NAME", "ENGINE/MODEL", "STATE", "DONE", "FAILED", "MEAN GEN", "RSS"]
    rows = []
    for w in view.workers:
        rows.append([w.worker_id, w.name, f"{w.engine}:{w.model}" if w.model else w.engine,
                     f"{w.state} {w.busy}/{w.capacity}", str(w.jobs_done), str(w.jobs_failed),
                     f"{w.mean_gen_ms:.0f} ms", f"{w.rss_bytes / 2**20:.0f} MiB"])
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = [click.style("  ".join(h.ljust(widths[i]) for i, h in enumerate(headers)), bold=True)]
    for r in rows:
        cells = [c.ljust(widths[i]) for i, c in enumerate(r)]
        cells[3] = click.style(cells[3], fg="green" if r[3].startswith("idle") else "yellow")
        if r[5] != "0":
            cells[5] = click.style(cells[5], fg="red")
        lines.append("  ".join(cells))
    if not rows:
        lines.append(click.style("no workers connected", fg="yellow"))
    queue, jobs = view.queue, view.jobs
    lines.append("")
    lines.append(f"queue {queue.get('depth', 0)}/{queue.get('max', '?')}  running {jobs.get('running', 0)}  "
                 f"done {jobs.get('done', 0)}  failed {jobs.get('failed', 0)}  "
                 f"broker {view.broker_id} v{view.version} up {view.uptime_s:.0f}s"
                 + (click.style("  draining", fg="yellow") if view.draining else ""))
    if view.paused:
        lines.append(click.style(f"paused models: {', '.join(view.paused)}", fg="yellow"))
    supervisors = {(w.host, w.supervisor.get("pid")): w.supervisor for w in view.workers if w.supervisor}
    for (host, _pid), sup in sorted(supervisors.items(), key=lambda item: str(item[0])):
        lines.append(f"supervisor {host} pid {sup.get('pid', '?')}: {sup.get('workers', '?')} workers "
                     f"(min {sup.get('min', '?')}, max {sup.get('max', '?')}, target {sup.get('target', '?')}); "
                     f"last: {sup.get('last', '-')}")
    cache = jobs.get("cache")
    if isinstance(cache, dict):
        lines.append(f"result cache {cache.get('entries', 0)} entries, {cache.get('bytes', 0) / 2**20:.1f} MiB, "
                     f"hits {cache.get('hits', 0)}, misses {cache.get('misses', 0)}")
    return "\n".join(lines)


@main.command()
@click.pass_context
@handle_errors
def ping(ctx: click.Context) -> None:
    """Check that the broker answers."""
    reply = _client(ctx).ping()
    click.echo(f"broker {reply.broker_id} answered in {reply.rtt_ms:.1f} ms")


@main.command()
@click.option("--model", help="Only workers serving this routing key (default: all).")
@click.option("--engine-opt", "engine_opts", multiple=True, metavar="KEY=VALUE",
              help="Option merged over the workers' engine options (repeatable).")
@click.option("--wait-s", type=click.FloatRange(0, 3600), default=120.0,
              help="Wait this long for each worker to come back and report; 0 = only tell them.")
@click.pass_context
@handle_errors
def reload(ctx: click.Context, model: Optional[str], engine_opts: tuple[str, ...], wait_s: float) -> None:
    """Hot-reload workers: each finishes its jobs, reloads its engine with the options and reconnects.

    Prints each told worker's outcome; exits 1 when no worker serves MODEL or none of them reloaded.
    """
    client = _client(ctx)
    options = parse_options(engine_opts)
    if wait_s == 0:
        told = client.reload(model=model, options=options)
        click.echo(f"told {told} worker(s) to reload")
        if told == 0:
            sys.exit(EXIT_JOB_FAILED)
        return
    reply = client.reload_wait(model=model, options=options, wait_s=wait_s)
    if reply.workers == 0:
        _fail(f"no connected worker serves {model!r}" if model else "no worker is connected", EXIT_JOB_FAILED)
    colours = {"reloaded": "green", "failed": "red", "missing": "yellow"}
    for o in reply.outcomes:
        who = f"{o.worker_id} ({o.name})" if o.name else o.worker_id
        detail = {"reloaded": f"back as {o.new_worker_id}", "failed": f"kept its old engine: {o.error}",
                  "missing": f"not back within {wait_s:g}s"}[o.outcome]
        click.echo(f"{who}: " + click.style(o.outcome, fg=colours[o.outcome]) + f", {detail}")
    done = sum(o.outcome == "reloaded" for o in reply.outcomes)
    click.echo(f"{done} of {reply.workers} worker(s) reloaded")
    if done == 0:
        sys.exit(EXIT_JOB_FAILED)


@main.command()
@click.option("--failed", is_flag=True, help="Only jobs that failed for good: the dead-letter list.")
@click.option("--state", type=click.Choice([s.value for s in JobState]), help="Only jobs in this state.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, help="How many of the newest jobs.")
@click.option("--json", "as_json", is_flag=True, help="Print the job views as JSON.")
@click.pass_context
@handle_errors
def jobs(ctx: click.Context, failed: bool, state: Optional[str], limit: int, as_json: bool) -> None:
    """Recent jobs, newest first: state, attempts, workers, timings and errors."""
    views = _client(ctx).jobs("failed" if failed else state, limit=limit)
    if as_json:
        click.echo(json.dumps([v.to_wire() for v in views], indent=2))
        return
    click.echo(render_jobs(views))


_STATE_COLOURS = {"done": "green", "queued": "cyan", "running": "yellow", "failed": "red", "cancelled": "magenta"}


def render_jobs(views: list[JobView]) -> str:
    """A coloured table of job views."""
    if not views:
        return click.style("no jobs", fg="yellow")
    headers = ["JOB", "STATE", "ATTEMPT", "PRIORITY", "QUEUED", "RAN", "WORKERS", "ERROR"]
    rows = []
    for v in views:
        error = f"{v.error.code}: {v.error.message}"[:80] if v.error else ("cache hit" if v.cached else "")
        rows.append([v.job_id, v.state.value, str(v.attempt), v.priority.value, f"{v.queued_ms} ms",
                     "-" if v.run_ms is None else f"{v.run_ms} ms", ",".join(v.workers[-3:]) or "-", error])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = [click.style("  ".join(h.ljust(widths[i]) for i, h in enumerate(headers)), bold=True)]
    for r in rows:
        cells = [c.ljust(widths[i]) for i, c in enumerate(r)]
        cells[1] = click.style(cells[1], fg=_STATE_COLOURS.get(r[1], "white"))
        lines.append("  ".join(cells))
    return "\n".join(lines)


@main.command()
@click.argument("job_id")
@click.pass_context
@handle_errors
def retry(ctx: click.Context, job_id: str) -> None:
    """Run a failed or cancelled job again under the same id (its attempts start again)."""
    view = _client(ctx).retry(job_id)
    click.echo(f"job {view.job_id} is {view.state.value} again")


@main.command()
@click.option("--model", help="Routing key to check (default: TTS_CLIENT_MODEL, else the broker's default model).")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
@click.pass_context
@handle_errors
def health(ctx: click.Context, model: Optional[str], as_json: bool) -> None:
    """Exit 0 if a connected worker serves the model, 4 if none does, 3 if the broker does not answer.

    For systemd (ExecStartPost, watchdogs) and Kubernetes probes; draining brokers count as unhealthy.
    """
    settings: ClientSettings = ctx.obj
    view = _client(ctx).broker_status()
    key = model or settings.model or view.default_model
    serving = [w for w in view.workers if _serves(w.engine, w.model, key)]
    healthy = bool(serving) and not view.draining
    if view.draining:
        reason = "broker is draining"
    elif serving:
        reason = f"{len(serving)} worker(s) serve {key or 'any model'}"
    else:
        reason = f"no connected worker serves {key or 'any model'}"
    if as_json:
        click.echo(json.dumps({"healthy": healthy, "model": key, "workers": len(serving), "reason": reason,
                               "broker_id": view.broker_id}))
    else:
        click.secho(f"{'healthy' if healthy else 'unhealthy'}: {reason}", fg="green" if healthy else "red")
    sys.exit(EXIT_OK if healthy else EXIT_UNHEALTHY)


def _serves(engine: str, model: str, key: Optional[str]) -> bool:
    """The broker's routing rule (tts_broker.workers.WorkerRecord.serves) seen from a worker view."""
    return key is None or key == engine or (bool(model) and key == f"{engine}:{model}")


@main.command("get")
@click.argument("job_id")
@click.option("-o", "--output", "output_file", required=True, type=click.Path(dir_okay=False),
              help="Audio file to write (format from its extension unless --format).")
@click.option("--format", "fmt", type=click.Choice(sorted(FORMATS)), help="Audio format.")
@click.pass_context
@handle_errors
def get(ctx: click.Context, job_id: str, output_file: str, fmt: Optional[str]) -> None:
    """Fetch a finished job's audio by its id (e.g. after `tts retry`) into a file; prints its path."""
    settings: ClientSettings = ctx.obj
    target = Path(output_file)
    fmt = check_format(fmt) if fmt else format_for_path(target, settings.output_format)
    result = _client(ctx).get_result(job_id)
    path = save_result(result, target, fmt)
    click.echo(str(path))
    meta = result.meta
    click.echo(click.style(f"{result.duration_s:.2f}s of audio, {meta.engine}"
                           f"{':' + meta.model if meta.model else ''} on {meta.worker_id}, attempt {meta.attempt}",
                           dim=True), err=True)


@main.command()
@click.argument("worker", required=False)
@click.option("--host", help="Drain every worker on this host (as the workers report it).")
@click.pass_context
@handle_errors
def drain(ctx: click.Context, worker: Optional[str], host: Optional[str]) -> None:
    """Drain WORKER (its id or name) or --host HOST: no new jobs, finish those in hand, then disconnect."""
    if (worker is None) == (host is None):
        raise click.UsageError("give a WORKER or --host HOST (one of them)")
    ids = _client(ctx).drain(worker, host=host)
    click.echo(f"draining {len(ids)} worker(s): {', '.join(ids)}")


@main.command()
@click.argument("model")
@click.pass_context
@handle_errors
def pause(ctx: click.Context, model: str) -> None:
    """Stop dispatching jobs for routing key MODEL (ENGINE or ENGINE:MODEL); they stay queued."""
    paused = _client(ctx).pause(model)
    click.echo(f"paused: {', '.join(paused)}")


@main.command()
@click.argument("model")
@click.pass_context
@handle_errors
def resume(ctx: click.Context, model: str) -> None:
    """Dispatch jobs for routing key MODEL again."""
    paused = _client(ctx).resume(model)
    click.echo(f"resumed {model}; paused: {', '.join(paused) or 'none'}")
