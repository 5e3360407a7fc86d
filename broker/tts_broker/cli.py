"""`tts-broker`: run the broker in the foreground."""

from __future__ import annotations

import sys
from typing import Any, Optional

import click
import zmq

from tts_protocol.logjson import configure_logging

from tts_broker import __version__
from tts_broker.httpd import parse_listen
from tts_broker.server import Broker
from tts_broker.settings import BrokerSettings


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--frontend", help="Endpoint clients connect to [env TTS_FRONTEND; default tcp://127.0.0.1:5555].")
@click.option("--backend", help="Endpoint workers connect to [env TTS_BACKEND; default tcp://127.0.0.1:5556].")
@click.option("--heartbeat-interval-s", type=float, help="Heartbeat period both ways [TTS_HEARTBEAT_INTERVAL_S].")
@click.option("--heartbeat-liveness", type=int, help="Missed heartbeats before a worker is dead.")
@click.option("--max-attempts", type=int, help="Attempts before a job fails as a poison job.")
@click.option("--max-queue", type=int, help="Queued jobs before SUBMIT answers queue_full.")
@click.option("--max-text-chars", type=int, help="Longest text a job may carry.")
@click.option("--job-timeout-s", type=float, help="Default per-attempt run time limit.")
@click.option("--drain-grace-s", type=float, help="On SIGTERM, how long running jobs may finish.")
@click.option("--default-model", help="Routing key for jobs that name no model (ENGINE or ENGINE:MODEL).")
@click.option("--unroutable-timeout-s", type=float, help="Fail jobs no worker serves after this long (0 = wait).")
@click.option("--result-ttl-s", type=float, help="How long finished jobs and their audio are kept.")
@click.option("--state-dir", help="Folder for the journal and the result cache [TTS_STATE_DIR; .tts-broker].")
@click.option("--journal", "journal_path", type=click.Path(dir_okay=False), help="Journal file (SQLite).")
@click.option("--no-journal", "journal_enabled", flag_value=False, default=None, help="Keep jobs in memory only.")
@click.option("--journal-sync", type=click.Choice(["normal", "full"]), help="full: fsync every commit group.")
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Result cache folder.")
@click.option("--no-cache", "cache_enabled", flag_value=False, default=None, help="Turn the result cache off.")
@click.option("--cache-max-mb", type=int, help="Result cache size bound in MiB.")
@click.option("--ready-file", type=click.Path(dir_okay=False), help="Write bound endpoints as JSON here once ready.")
@click.option("--http", metavar="HOST:PORT",
              help="Serve /metrics, /api/status and the dashboard here (port 0 = free port) [TTS_HTTP; off].")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.option("--log-json", "log_json", flag_value=True, default=None,
              help="One JSON object per log line, with job_id and worker_id [TTS_LOG_JSON].")
@click.version_option(__version__, prog_name="tts-broker")
def main(**flags: Optional[Any]) -> None:
    """Queue TTS jobs from clients and lease them to model-resident workers (ZeroMQ, TTSP/2)."""
    overrides = {k: v for k, v in flags.items() if v is not None}
    try:
        settings = BrokerSettings(**overrides)
    except Exception as exc:  # pydantic ValidationError: show it as a usage error
        raise click.UsageError(str(exc)) from exc
    if settings.http is not None:
        try:
            parse_listen(settings.http)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--http") from exc
    configure_logging(settings.log_level, json_lines=settings.log_json, component="broker")
    try:
        broker = Broker(settings)
    except zmq.ZMQError as exc:
        click.echo(f"tts-broker: cannot bind {settings.frontend} / {settings.backend}: {exc}", err=True)
        sys.exit(3)
    except OSError as exc:  # the HTTP port
        click.echo(f"tts-broker: {exc}", err=True)
        sys.exit(3)
    broker.install_signal_handlers()
    if settings.ready_file:
        broker.write_ready_file(settings.ready_file)
    broker.run()
