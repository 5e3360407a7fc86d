"""`tts-broker`: run the broker in the foreground."""

from __future__ import annotations

import logging
import sys
from typing import Any, Optional

import click
import zmq

from tts_protocol import TtsError
from tts_protocol.errors import one_line
from tts_protocol.logjson import configure_logging
from tts_protocol.settings_help import add_settings_help

from tts_broker import __version__
from tts_broker.fdlimit import raise_nofile
from tts_broker.httpd import parse_listen
from tts_broker.leadership import LeadershipLost
from tts_broker.server import Broker
from tts_broker.settings import BrokerSettings
from tts_broker.statedir import EXIT_BIND, EXIT_USAGE, BrokerStartError


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--frontend", help="Endpoint clients connect to.")
@click.option("--backend", help="Endpoint workers connect to.")
@click.option("--heartbeat-interval-s", type=float, help="Heartbeat period both ways.")
@click.option("--heartbeat-liveness", type=int, help="Missed heartbeats before a worker is dead.")
@click.option("--max-attempts", type=int, help="Attempts before a job fails as a poison job.")
@click.option("--max-queue", type=int, help="Queued jobs before SUBMIT answers queue_full.")
@click.option("--max-text-chars", type=int, help="Longest text a job may carry.")
@click.option("--job-timeout-s", type=float, help="Default per-attempt run time limit.")
@click.option("--drain-grace-s", type=float, help="On SIGTERM, how long queued and running jobs may finish (less once "
              "nothing runs and no worker serves a queued job).")
@click.option("--default-model", help="Routing key for jobs that name no model (ENGINE or ENGINE:MODEL).")
@click.option("--unroutable-timeout-s", type=float, help="Fail jobs no worker serves after this long (0 = wait).")
@click.option("--result-ttl-s", type=float, help="How long finished jobs and their audio are kept.")
@click.option("--dead-letter-ttl-s", type=float,
              help="How long failed jobs (dead letters) are kept, apart from results; journaled (default 7 days).")
@click.option("--max-worker-capacity", type=int, help="READY capacity above this is clamped to it.")
@click.option("--max-result-bytes", type=int, help="Largest audio of one job; bigger fails with too_large.")
@click.option("--max-client-queued", type=int, help="Queued jobs per client before too_many_jobs (0 = no cap).")
@click.option("--max-client-running", type=int, help="Running jobs per client at once (0 = no cap).")
@click.option("--allow-high-priority", type=click.Choice(["all", "none", "admin"]),
              help="Who may submit priority high (none: downgraded to normal; under CURVE unset means admin).")
@click.option("--state-dir", help="Folder for the journal and the result cache.")
@click.option("--journal", "journal_path", type=click.Path(dir_okay=False), help="Journal file (SQLite).")
@click.option("--no-journal", "journal_enabled", flag_value=False, default=None, help="Keep jobs in memory only.")
@click.option("--journal-url", help="postgresql://USER:PASSWORD@HOST:PORT/DB: PostgreSQL journal and leadership "
              "(extra `postgres`).")
@click.option("--leader-lease-s", type=float, help="PostgreSQL journal: a silent active loses leadership after this.")
@click.option("--journal-sync", type=click.Choice(["normal", "full"]), help="full: fsync every commit group.")
@click.option("--journal-max-audio-mb", type=int, help="Audio of finished jobs kept in the journal (0 = no cap).")
@click.option("--accept-journal-loss", is_flag=True, default=None,
              help="Start even if the journal lost data (truncated, deleted, WAL lost or garbled); its jobs are gone.")
@click.option("--journal-retry-s", type=float, help="While journal commits fail, retry this often.")
@click.option("--client-backlog-max-bytes", type=int, help="Replies held for one client that does not read.")
@click.option("--client-sndhwm", type=int, help="Messages ZeroMQ queues towards one client before the backlog.")
@click.option("--max-retained-bytes", type=int, help="Audio kept in memory for finished jobs (oldest dropped).")
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Result cache folder.")
@click.option("--no-cache", "cache_enabled", flag_value=False, default=None, help="Turn the result cache off.")
@click.option("--cache-max-mb", type=int, help="Result cache size bound in MiB.")
@click.option("--cache-shared-keys", metavar="NAMES",
              help="Under CURVE: client key names (comma-separated, * = all) that share cache hits "
                   "(unset: each key its own).")
@click.option("--ready-file", type=click.Path(dir_okay=False), help="Write bound endpoints as JSON here once ready.")
@click.option("--curve-secret", type=click.Path(dir_okay=False, exists=True),
              help="The broker's CURVE key pair (NAME.key_secret): CURVE on both ports.")
@click.option("--client-keys", type=click.Path(file_okay=False, exists=True),
              help="Folder of allowed client public keys, re-read on change.")
@click.option("--worker-keys", type=click.Path(file_okay=False, exists=True),
              help="Folder of allowed worker public keys, re-read on change.")
@click.option("--admin-keys", type=click.Path(file_okay=False, exists=True),
              help="Folder of admin public keys: RELOAD, every job, worker details.")
@click.option("--http", metavar="HOST:PORT",
              help="Serve /metrics, /api/status and the dashboard here (port 0 = free port; unset: off).")
@click.option("--metrics-models", metavar="KEYS",
              help="Routing keys always labelled in /metrics (e.g. a model that scales from zero); "
                   "others only while a worker serves them, else `other`.")
@click.option("--http-max-connections", type=int,
              help="HTTP connections at once, at most a quarter of the descriptor limit.")
@click.option("--http-idle-timeout-s", type=float,
              help="Close an HTTP connection silent this long, headers included.")
@click.option("--http-token-file", type=click.Path(dir_okay=False, exists=True),
              help="Bearer tokens (one a line) that /metrics and /api/* require (unset: open).")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.option("--log-json", "log_json", flag_value=True, default=None,
              help="One JSON object per log line, with job_id and worker_id.")
@click.version_option(__version__, prog_name="tts-broker")
def main(**flags: Optional[Any]) -> None:
    """Queue TTS jobs from clients and lease them to model-resident workers (ZeroMQ, TTSP/2).

    Exit codes: 0 stopped cleanly, 2 usage error, 3 cannot bind, 4 the state dir is in use by another broker,
    5 the state dir or journal is unusable (read-only, lost data, failed integrity check, foreign schema),
    6 the PostgreSQL journal cannot be reached or refuses us, 7 stepped down: another broker is active now.
    """
    overrides = {k: v for k, v in flags.items() if v is not None}
    try:
        settings = BrokerSettings(**overrides)
    except Exception as exc:  # pydantic ValidationError: show it as a usage error
        raise click.UsageError(one_line(exc)) from exc
    if settings.http is not None:
        try:
            parse_listen(settings.http)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--http") from exc
    configure_logging(settings.log_level, json_lines=settings.log_json, component="broker")
    soft, hard = raise_nofile()
    try:
        broker = Broker(settings)
    except BrokerStartError as exc:
        click.echo(f"tts-broker: {exc}", err=True)
        sys.exit(exc.exit_code)
    except zmq.ZMQError as exc:
        click.echo(f"tts-broker: cannot bind {settings.frontend} / {settings.backend}: {exc}", err=True)
        sys.exit(EXIT_BIND)
    except (TtsError, ValueError) as exc:  # a bad key file or key folder
        click.echo(f"tts-broker: CURVE: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except OSError as exc:  # the HTTP port
        click.echo(f"tts-broker: {exc}", err=True)
        sys.exit(EXIT_BIND)
    # Said once the start can no longer fail: a refused start stays one line on stderr.
    logging.getLogger("tts_broker").info("descriptor limit %s (hard %s): about that many clients, workers and "
                                         "HTTP connections at once", soft, hard)
    broker.install_signal_handlers()
    if settings.ready_file:
        broker.write_ready_file(settings.ready_file)
    try:
        broker.run()
    except LeadershipLost as exc:
        click.echo(f"tts-broker: stepped down (epoch {broker.leader.link.epoch if broker.leader else 0}): {exc}",
                   err=True)
        sys.exit(exc.exit_code)


add_settings_help(main, BrokerSettings)
