"""`python -m tts_client.demo`: the seed's usage example, end to end, through the seed API.

Waits until the broker has the expected number of workers, speaks "Hello, world!" with generate_audio and
the two example messages with create_message_chunks/process_message_chunks, then prints the files and the
workers' statistics. `make demo` runs it against a stack started with `tts up`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Optional

import click

from tts_protocol.messages import StatusView, WorkerView

from tts_client import seed_api
from tts_client.cli import EXIT_JOB_FAILED, EXIT_UNAVAILABLE, render_status
from tts_client.errors import TtsClientError
from tts_client.settings import ClientSettings

EXAMPLE_MESSAGES = [
    {"text": "First message", "speaker": "default", "id": 1},
    {"text": "Second message", "speaker": "default", "id": 2},
]


def _alive(pid: Optional[int]) -> bool:
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_for_workers(expected: int, timeout_s: float, watch_pid: Optional[int] = None) -> bool:
    """Poll the broker until `expected` workers are registered (models take a while to load); give up early
    if the process `watch_pid` (the `tts up` serving them) has gone."""
    client = seed_api.default_client()
    deadline = time.monotonic() + timeout_s
    last_seen = -1
    while time.monotonic() < deadline and _alive(watch_pid):
        try:
            seen = client.broker_status(timeout_s=2).worker_count
        except TtsClientError:
            seen = -1
        if seen != last_seen and seen >= 0:
            click.echo(f"  {seen}/{expected} workers registered", err=True)
            last_seen = seen
        if seen >= expected:
            return True
        time.sleep(0.5)
    return False


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--broker", "broker_url", envvar="TTS_BROKER_URL", help="Broker frontend URL [env TTS_BROKER_URL].")
@click.option("--workers", type=int, default=2, help="Workers to wait for before synthesising.")
@click.option("--wait-s", type=float, default=180.0, help="How long to wait for them.")
@click.option("--output-dir", default="output", type=click.Path(file_okay=False), help="Where the files go.")
@click.option("--watch-pid", type=int, help="Stop waiting if this process (e.g. `tts up`) exits.")
@click.option("--stack-ready-file", type=click.Path(dir_okay=False),
              help="`tts up --ready-file`: wait for it, and talk only to the broker it names (its broker_id).")
def main(broker_url: Optional[str], workers: int, wait_s: float, output_dir: str, watch_pid: Optional[int],
         stack_ready_file: Optional[str]) -> None:
    """Run the seed's example through the broker."""
    settings = ClientSettings(broker_url=broker_url) if broker_url else ClientSettings()
    seed_api.configure(settings=settings)
    try:
        if stack_ready_file is not None:
            _check_own_broker(Path(stack_ready_file), wait_s, watch_pid)
        click.secho(f"waiting for {workers} worker(s) at {settings.broker_url} ...", fg="cyan", err=True)
        if not wait_for_workers(workers, wait_s, watch_pid):
            why = "the stack exited" if not _alive(watch_pid) else f"not within {wait_s:.0f}s"
            click.secho(f"demo: {workers} worker(s) did not register ({why})", fg="red", err=True)
            sys.exit(EXIT_UNAVAILABLE)
        started = time.perf_counter()
        paths = [seed_api.generate_audio("Hello, world!", "default", 1, 1, output_dir)]
        chunks = seed_api.create_message_chunks(EXAMPLE_MESSAGES, 10)
        paths += seed_api.process_message_chunks(chunks, output_dir)
        elapsed = time.perf_counter() - started
        click.secho(f"synthesised {len(paths)} files in {elapsed:.2f}s:", fg="green")
        for path in paths:
            _describe(Path(path))
        click.echo()
        click.echo(render_status(_status_with_stats()))
    except TtsClientError as exc:
        click.secho(f"demo failed: {exc}", fg="red", err=True)
        sys.exit(EXIT_JOB_FAILED)
    finally:
        seed_api.shutdown_worker_manager()


def _check_own_broker(ready_file: Path, wait_s: float, watch_pid: Optional[int]) -> None:
    """Wait for `tts up`'s ready file, then make sure the broker answering is the one it started: with the
    ports taken, `tts up` fails while another broker answers there, and the demo must not report its success."""
    deadline = time.monotonic() + wait_s
    while not ready_file.exists():
        if not _alive(watch_pid):
            click.secho("demo: `tts up` exited before its broker was ready (see its log)", fg="red", err=True)
            sys.exit(EXIT_UNAVAILABLE)
        if time.monotonic() > deadline:
            click.secho(f"demo: `tts up` did not start its broker within {wait_s:.0f}s", fg="red", err=True)
            sys.exit(EXIT_UNAVAILABLE)
        time.sleep(0.1)
    expected = json.loads(ready_file.read_text(encoding="utf-8")).get("broker_id")
    answered = seed_api.default_client().ping(timeout_s=10).broker_id
    if answered != expected:
        click.secho(f"demo: the broker answering is {answered}, not {expected} that `tts up` started; another "
                    "broker holds the address", fg="red", err=True)
        sys.exit(EXIT_UNAVAILABLE)


def _status_with_stats(timeout_s: float = 5.0) -> StatusView:
    """The broker status once every worker has reported its statistics (they ride on 1 s heartbeats)."""
    client = seed_api.default_client()
    deadline = time.monotonic() + timeout_s
    status = client.broker_status()
    while time.monotonic() < deadline and not all(_reported(w) for w in status.workers):
        time.sleep(0.3)
        status = client.broker_status()
    return status


def _reported(worker: WorkerView) -> bool:
    return worker.rss_bytes > 0 and (worker.jobs_done == 0 or worker.mean_gen_ms > 0)


def _describe(path: Path) -> None:
    import soundfile

    info = soundfile.info(str(path))
    click.echo(f"  {path}  {info.duration:.2f}s  {info.samplerate} Hz  {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
