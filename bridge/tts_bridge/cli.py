"""`tts bridge bullmq|redis-streams|amqp`: the bridges' command line (loaded only when `tts bridge` runs)."""

from __future__ import annotations

import asyncio
import functools
import json
from pathlib import Path
from typing import Any, Callable, Optional

import click
from pydantic import ValidationError

from tts_protocol.settings_help import add_settings_help

from tts_bridge.runner import JobRunner
from tts_bridge.service import Bridge, serve
from tts_bridge.settings import BridgeSettings
from tts_bridge.stats import BridgeStats
from tts_client.errors import TtsClientError
from tts_client.settings import ClientSettings

EXIT_USAGE = 2


def _fail(message: str, code: int = EXIT_USAGE) -> None:
    click.echo(click.style(f"tts bridge: {message}", fg="red"), err=True)
    raise SystemExit(code)


def common_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options every bridge shares (BridgeSettings, env TTS_BRIDGE_*, when not given)."""
    options = [
        click.option("--output-dir", help="Folder for the audio files."),
        click.option("--max-in-flight", type=int, help="Most jobs in flight."),
        click.option("--tenant-field", help="Message field that splits fairness (one broker client per value)."),
        click.option("--metrics-listen", help="HOST:PORT for Prometheus /metrics (port 0: any free one; unset: none)."),
        click.option("--status-interval-s", type=float, help="Seconds between status lines on stderr (0: none)."),
        click.option("--dead-after-s", type=float,
                     help="A bridge silent this long is dead; its messages are taken over."),
        click.option("--max-text-chars", type=int, help="Longer texts are dead-lettered."),
        click.option("--ready-file", type=click.Path(dir_okay=False),
                     help="Write {bridge, metrics} here as JSON once consuming."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


_COMMON = ("output_dir", "max_in_flight", "tenant_field", "metrics_listen", "status_interval_s", "dead_after_s",
           "max_text_chars")


def _settings(kwargs: dict[str, Any]) -> BridgeSettings:
    given = {k: kwargs.pop(k) for k in _COMMON}
    try:
        return BridgeSettings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        _fail("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
        raise  # unreachable


def _run(ctx: click.Context, name: str, kwargs: dict[str, Any],
         make: Callable[[JobRunner, BridgeSettings, BridgeStats], Bridge]) -> None:
    ready_file: Optional[str] = kwargs.pop("ready_file")
    settings = _settings(kwargs)
    client_settings: ClientSettings = ctx.obj
    stats = BridgeStats(name)

    def ready(info: dict[str, Any]) -> None:
        click.secho(f"bridge {name}: consuming; broker {client_settings.broker_url}, audio into "
                    f"{settings.output_dir}" + (f", metrics {info['metrics']}" if "metrics" in info else ""),
                    fg="cyan", err=True)
        if ready_file:
            tmp = Path(ready_file + ".tmp")
            tmp.write_text(json.dumps(info))
            tmp.replace(ready_file)

    async def main() -> None:
        runner = JobRunner(client_settings, settings, stats)
        bridge = make(runner, settings, stats)
        await serve(bridge, runner, stats, settings, report=lambda line: click.echo(line, err=True), on_ready=ready)

    try:
        asyncio.run(main())
    except (TtsClientError, ValueError, OSError) as exc:
        _fail(str(exc))


def _load(module: str, name: str) -> Any:
    """A bridge class; without the `bridges` extra (bullmq, redis, aio-pika) one line naming it, no traceback."""
    import importlib

    try:
        return getattr(importlib.import_module(f"tts_bridge.{module}"), name)
    except ImportError as exc:
        _fail(f"the bridges need their extra: pip install 'tts-broker[bridges]' (or -e '.[bridges]' in the "
              f"checkout); missing: {exc.name or exc}")
        raise  # unreachable


@click.group()
def bridge() -> None:
    """Take jobs from a queue system (BullMQ, Redis Streams, RabbitMQ) and hand the results back."""


@bridge.command("redis-streams")
@click.option("--redis", "redis_url", default="redis://127.0.0.1:6379/0", show_default=True,
              help="Redis URL (redis://[:PASSWORD@]HOST:PORT/DB).")
@click.option("--stream", default="tts:jobs", show_default=True, help="Stream the jobs are added to.")
@click.option("--group", default="tts-broker", show_default=True, help="Consumer group (made if missing).")
@click.option("--results", default="tts:results", show_default=True, help="Stream the answers go to.")
@click.option("--dead", help="Dead-letter stream [STREAM:dead].")
@click.option("--consumer", help="Consumer name [host-pid-random].")
@common_options
@click.pass_context
def redis_streams(ctx: click.Context, redis_url: str, stream: str, group: str, results: str, dead: Optional[str],
                  consumer: Optional[str], **kwargs: Any) -> None:
    """Consume a Redis stream (XREADGROUP); answers in a result stream."""
    RedisStreamsBridge = _load('redis_streams', 'RedisStreamsBridge')

    _run(ctx, "redis-streams", kwargs, functools.partial(
        _make_streams, RedisStreamsBridge, redis_url=redis_url, stream=stream, group=group, results=results,
        dead=dead, consumer=consumer))


def _make_streams(cls: Any, runner: JobRunner, settings: BridgeSettings, stats: BridgeStats,
                  **kwargs: Any) -> Bridge:
    return cls(runner, settings, stats, **kwargs)  # type: ignore[no-any-return]


@bridge.command("bullmq")
@click.option("--redis", "redis_url", default="redis://127.0.0.1:6379/0", show_default=True,
              help="Redis URL (redis://[:PASSWORD@]HOST:PORT/DB).")
@click.option("--queue", "queue_name", default="tts", show_default=True, help="BullMQ queue name.")
@click.option("--prefix", default="bull", show_default=True, help="BullMQ key prefix.")
@click.option("--job-id-prefix", default="", help="Put before BullMQ's job id to make our job id.")
@common_options
@click.pass_context
def bullmq(ctx: click.Context, redis_url: str, queue_name: str, prefix: str, job_id_prefix: str,
           **kwargs: Any) -> None:
    """Work a BullMQ queue: each job's return value is {path, sha256, duration_ms, sample_rate, cached}."""
    BullMQBridge = _load('bullmq_bridge', 'BullMQBridge')

    _run(ctx, "bullmq", kwargs, functools.partial(
        _make_streams, BullMQBridge, redis_url=redis_url, queue=queue_name, prefix=prefix,
        job_id_prefix=job_id_prefix))


@bridge.command("amqp")
@click.option("--url", default="amqp://127.0.0.1:5672/", show_default=True,
              help="RabbitMQ URL, amqp://USER:PASSWORD@HOST:PORT/VHOST; without a user, RabbitMQ's default one.")
@click.option("--queue", "queue_name", default="tts.jobs", show_default=True, help="Queue (quorum, made if missing).")
@click.option("--dead", help="Dead-letter queue [QUEUE.dead].")
@common_options
@click.pass_context
def amqp(ctx: click.Context, url: str, queue_name: str, dead: Optional[str], **kwargs: Any) -> None:
    """Consume a RabbitMQ queue; answers RPC style to each message's reply_to with its correlation_id."""
    AmqpBridge = _load('amqp', 'AmqpBridge')

    _run(ctx, "amqp", kwargs, functools.partial(_make_streams, AmqpBridge, url=url, queue=queue_name, dead=dead))


for _command in (redis_streams, bullmq, amqp):
    add_settings_help(_command, BridgeSettings)
