"""`tts-worker` / `python -m tts_worker`: start a supervisor with N worker processes, or one worker.

Flags override the environment (settings.py lists the variable names). Logging is configured here only.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Optional

import click
from pydantic import ValidationError

from tts_protocol.errors import one_line
from tts_protocol.logjson import JsonFormatter
from tts_protocol.settings_help import add_settings_help

from tts_worker import __version__
from tts_worker.engines.base import EngineLoadError
from tts_worker.engines.registry import list_engines, resolve
from tts_worker.exit_codes import ExitCode
from tts_worker.settings import DEVICES, WorkerSettings

log = logging.getLogger("tts_worker")


def _parse_engine_opts(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    options: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not key=value", ctx=ctx, param=param)
        options[key] = value
    return options


def configure_logging(level: str, name: str, *, json_lines: bool = False) -> None:
    if json_lines:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter("worker"))
        logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler], force=True)
        return
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format=f"%(asctime)s %(levelname)s %(name)s [{name} pid %(process)d] %(message)s",
        stream=sys.stderr,
        force=True,
    )


def _print_engines() -> None:
    rows = list_engines()
    width = max(len(r.name) for r in rows)
    for row in rows:
        state = "installed" if row.installed else "not installed"
        click.echo(f"{row.name:<{width}}  {state:<13}  licence: {row.licence}")
        click.echo(f"{'':<{width}}  {row.description} ({row.source})")


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--broker", "broker_url", help="Broker backend endpoint, or a comma-separated list (failover).")
@click.option("--engine", help="Engine name (see --list-engines).")
@click.option("--engine-opt", "engine_opts", multiple=True, callback=_parse_engine_opts, metavar="KEY=VALUE",
              help="Engine option, repeatable (e.g. latency_s=0.5, model=PATH, checkpoint=DIR).")
@click.option("--device", type=click.Choice(DEVICES), help="Where the engine runs.")
@click.option("--concurrency", type=click.IntRange(1, 256),
              help="Worker processes to run.")
@click.option("--name", help="Worker name shown in broker status; children get NAME/i.")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.option("--log-json", "log_json", flag_value=True, default=None,
              help="One JSON object per log line, with job_id and worker_id.")
@click.option("--model-version", help="Model version for engines that have several.")
@click.option("--semantic-token-cache/--no-semantic-token-cache", default=None,
              help="Cache reference voice tokens (Fish Speech).")
@click.option("--heartbeat-interval-s", type=click.FloatRange(0.01, 60),
              help="Heartbeat period, both ways.")
@click.option("--heartbeat-liveness", type=click.IntRange(1, 100),
              help="Missed heartbeats before the broker is judged dead.")
@click.option("--cancel-grace-s", type=click.FloatRange(0.01), help="Time a cancelled job may take to stop before "
              "the worker process is replaced.")
@click.option("--max-jobs", type=click.IntRange(0), help="Recycle a worker process after this many jobs, "
              "0 = never.")
@click.option("--max-rss-mb", type=click.IntRange(0), help="Recycle a worker process whose memory exceeds this "
              "after a job, 0 = off.")
@click.option("--curve-secret", type=click.Path(dir_okay=False, exists=True),
              help="This worker's CURVE key pair (NAME.key_secret).")
@click.option("--broker-key", type=click.Path(dir_okay=False, exists=True),
              help="The broker's CURVE public key (NAME.key).")
@click.option("--min", "min_workers", type=click.IntRange(0, 256), help="Autoscale: fewest worker processes "
              "(with --max; replaces --concurrency).")
@click.option("--max", "max_workers", type=click.IntRange(1, 256), help="Autoscale: most worker processes.")
@click.option("--broker-frontend", help="Autoscale: the broker's client endpoint, polled for its queue "
              "(unset: the --broker port minus 1).")
@click.option("--scale-down-idle-s", type=click.FloatRange(0), help="Autoscale: idle time before workers above "
              "--min are retired.")
@click.option("--scale-up-wait-s", type=click.FloatRange(0), help="Autoscale: how long jobs wait without a free "
              "slot before a worker is added.")
@click.option("--worker-memory-mb", type=click.IntRange(0), help="Autoscale: memory one worker needs, 0 = "
              "measure the running workers.")
@click.option("--health-file", type=click.Path(dir_okay=False), help="Touch this file every heartbeat interval "
              "while the worker's loop runs (for liveness probes).")
@click.option("--ready-file", type=click.Path(dir_okay=False), help="Touch this file every heartbeat interval "
              "while a broker answers this worker and it takes jobs; removed when it does not (readiness probes).")
@click.option("--stdio", is_flag=True, help="Debug mode: one worker without a broker, JSON lines on stdin "
              "(load_model, generate), one JSON answer per line on stdout.")
@click.option("--list-engines", is_flag=True, help="List the engines with their licences and exit.")
@click.option("--single", is_flag=True, help="Run one worker process here, without a supervisor (for systemd or "
              "Kubernetes, which restart it themselves).")
@click.option("--supervised", is_flag=True, hidden=True)
@click.option("--load-error-file", type=click.Path(dir_okay=False, path_type=Path), hidden=True)
@click.option("--supervisor-status-file", type=click.Path(dir_okay=False, path_type=Path), hidden=True)
@click.version_option(__version__, prog_name="tts-worker")
def main(broker_url: Optional[str], engine: Optional[str], engine_opts: dict[str, str], device: Optional[str],
         concurrency: Optional[int], name: Optional[str], log_level: Optional[str], log_json: Optional[bool],
         model_version: Optional[str],
         semantic_token_cache: Optional[bool], heartbeat_interval_s: Optional[float],
         heartbeat_liveness: Optional[int], cancel_grace_s: Optional[float], max_jobs: Optional[int],
         max_rss_mb: Optional[int], curve_secret: Optional[str], broker_key: Optional[str],
         min_workers: Optional[int], max_workers: Optional[int],
         broker_frontend: Optional[str], scale_down_idle_s: Optional[float], scale_up_wait_s: Optional[float],
         worker_memory_mb: Optional[int], health_file: Optional[str], ready_file: Optional[str], stdio: bool,
         list_engines: bool,
         single: bool, supervised: bool,
         load_error_file: Optional[Path], supervisor_status_file: Optional[Path]) -> None:
    """Speech synthesis worker for tts-broker: loads an engine once and serves jobs from the broker."""
    if list_engines:
        _print_engines()
        sys.exit(ExitCode.OK)
    overrides: dict[str, Any] = {k: v for k, v in {
        "broker_url": broker_url, "engine": engine, "device": device, "concurrency": concurrency, "name": name,
        "log_level": log_level, "log_json": log_json, "model_version": model_version,
        "semantic_token_cache": semantic_token_cache,
        "heartbeat_interval_s": heartbeat_interval_s, "heartbeat_liveness": heartbeat_liveness,
        "cancel_grace_s": cancel_grace_s, "max_jobs": max_jobs, "max_rss_mb": max_rss_mb,
        "curve_secret": curve_secret, "broker_key": broker_key,
        "min_workers": min_workers, "max_workers": max_workers, "broker_frontend": broker_frontend,
        "scale_down_idle_s": scale_down_idle_s, "scale_up_wait_s": scale_up_wait_s,
        "worker_memory_mb": worker_memory_mb, "health_file": health_file, "ready_file": ready_file,
    }.items() if v is not None}
    try:
        settings = WorkerSettings(**overrides)
    except ValidationError as exc:
        click.echo(f"tts-worker: bad settings: {one_line(exc)}", err=True)
        sys.exit(ExitCode.USAGE)
    options: dict[str, Any] = {**settings.engine_options, **engine_opts}
    configure_logging(settings.log_level, settings.name, json_lines=settings.log_json)
    try:
        resolve(settings.engine)
    except EngineLoadError as exc:
        _report_load_error(exc, load_error_file)
        sys.exit(ExitCode.USAGE)
    if stdio:
        from tts_worker.stdio import StdioWorker

        sys.exit(StdioWorker(settings, options).run(sys.stdin, sys.stdout))
    if single:
        sys.exit(_run_single(settings, options, supervised=supervised, load_error_file=load_error_file,
                             supervisor_status_file=supervisor_status_file))
    from tts_worker.supervisor import Supervisor

    try:
        supervisor = Supervisor(settings, options)
    except ValueError as exc:
        click.echo(f"tts-worker: {exc}", err=True)
        sys.exit(ExitCode.USAGE)
    sys.exit(supervisor.run())


def _run_single(settings: WorkerSettings, options: dict[str, Any], *, supervised: bool,
                load_error_file: Optional[Path], supervisor_status_file: Optional[Path] = None) -> int:
    from tts_worker.daemon import WorkerDaemon

    try:
        return WorkerDaemon(settings, options, supervised=supervised,
                            supervisor_status_file=supervisor_status_file).run()
    except EngineLoadError as exc:
        _report_load_error(exc, load_error_file)
        return ExitCode.LOAD_FAILED


def _report_load_error(exc: Exception, load_error_file: Optional[Path]) -> None:
    log.error("%s", exc)
    if load_error_file is not None:
        try:
            load_error_file.write_text(str(exc), encoding="utf-8")
        except OSError:
            pass


add_settings_help(main, WorkerSettings)
