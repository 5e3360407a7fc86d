"""`tts` commands that look at or steer a running broker: status, health, jobs, get, retry, reload, drain,
pause, resume, ping, and `tts keys`. tts_client.cli adds them to the `tts` group."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import click

from tts_protocol.constants import JobState
from tts_protocol.curve import CurveKeyError, generate
from tts_protocol.views import status_document

from tts_client.audio import (
    FORMATS,
    output_format,
    save_result,
)
from tts_client.cli_common import (
    EXIT_JOB_FAILED,
    EXIT_OK,
    EXIT_UNHEALTHY,
    EXIT_USAGE,
    client_for,
    fail,
    handle_errors,
    parse_options,
)
from tts_client.cli_tables import clear_screen, render_jobs, render_status
from tts_client.errors import (
    BrokerUnavailable,
    ClientTimeout,
)
from tts_client.launcher import StopSignal
from tts_client.settings import ClientSettings


@click.group()
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
        fail(str(exc), EXIT_USAGE)
    click.echo(f"public key: {public}  (copy to the broker's allowlist folder, or to peers as --broker-key)")
    click.echo(f"secret key: {secret}  (mode 0600; stays on this host)")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the broker's status view as JSON.")
@click.option("--watch", is_flag=True, help="Refresh until Ctrl-C (with --json: one JSON document per line).")
@click.option("--interval-s", type=click.FloatRange(0.1, 3600), default=1.0, help="Refresh period of --watch.")
@click.pass_context
@handle_errors
def status(ctx: click.Context, as_json: bool, watch: bool, interval_s: float) -> None:
    """Workers (state, jobs, mean generation time, memory) and the queue."""
    client = client_for(ctx)
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
            click.echo(json.dumps({"error": str(exc)}) if as_json else clear_screen(shown), nl=as_json)
        else:
            if as_json:
                click.echo(json.dumps(status_document(view)))
            else:
                click.echo(clear_screen(render_status(view) + "\n" + click.style(
                    f"every {interval_s:g}s; Ctrl-C to stop", dim=True)), nl=False)
        if stop.event.wait(interval_s):
            return


@click.command()
@click.pass_context
@handle_errors
def ping(ctx: click.Context) -> None:
    """Check that the broker answers."""
    reply = client_for(ctx).ping()
    click.echo(f"broker {reply.broker_id} answered in {reply.rtt_ms:.1f} ms")


@click.command()
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
    client = client_for(ctx)
    options = parse_options(engine_opts)
    if wait_s == 0:
        told = client.reload(model=model, options=options)
        click.echo(f"told {told} worker(s) to reload")
        if told == 0:
            sys.exit(EXIT_JOB_FAILED)
        return
    reply = client.reload_wait(model=model, options=options, wait_s=wait_s)
    if reply.workers == 0:
        fail(f"no connected worker serves {model!r}" if model else "no worker is connected", EXIT_JOB_FAILED)
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


@click.command()
@click.option("--failed", is_flag=True, help="Only jobs that failed for good: the dead-letter list.")
@click.option("--state", type=click.Choice([s.value for s in JobState]), help="Only jobs in this state.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, help="How many of the newest jobs.")
@click.option("--json", "as_json", is_flag=True, help="Print the job views as JSON.")
@click.pass_context
@handle_errors
def jobs(ctx: click.Context, failed: bool, state: Optional[str], limit: int, as_json: bool) -> None:
    """Recent jobs, newest first: state, attempts, workers, timings and errors."""
    views = client_for(ctx).jobs("failed" if failed else state, limit=limit)
    if as_json:
        click.echo(json.dumps([v.to_wire() for v in views], indent=2))
        return
    click.echo(render_jobs(views))


@click.command()
@click.argument("job_id")
@click.pass_context
@handle_errors
def retry(ctx: click.Context, job_id: str) -> None:
    """Run a failed or cancelled job again under the same id (its attempts start again)."""
    view = client_for(ctx).retry(job_id)
    click.echo(f"job {view.job_id} is {view.state.value} again")


@click.command()
@click.option("--model", help="Routing key to check (unset: the broker's default model).")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
@click.pass_context
@handle_errors
def health(ctx: click.Context, model: Optional[str], as_json: bool) -> None:
    """Exit 0 if a connected worker serves the model, 4 if none does, 3 if the broker does not answer.

    For systemd (ExecStartPost, watchdogs) and Kubernetes probes; draining brokers count as unhealthy.
    """
    settings: ClientSettings = ctx.obj
    view = client_for(ctx).broker_status()
    key = model or settings.model or view.default_model
    serving = view.serving(key)  # the summary covers the whole fleet; the worker list is one page
    healthy = bool(serving) and not view.draining
    if view.draining:
        reason = "broker is draining"
    elif serving:
        reason = f"{serving} worker(s) serve {key or 'any model'}"
    else:
        reason = f"no connected worker serves {key or 'any model'}"
    if as_json:
        click.echo(json.dumps({"healthy": healthy, "model": key, "workers": serving, "reason": reason,
                               "broker_id": view.broker_id}))
    else:
        click.secho(f"{'healthy' if healthy else 'unhealthy'}: {reason}", fg="green" if healthy else "red")
    sys.exit(EXIT_OK if healthy else EXIT_UNHEALTHY)


@click.command("get")
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
    fmt = output_format(target, fmt, settings.output_format)
    result = client_for(ctx).get_result(job_id)
    path = save_result(result, target, fmt)
    click.echo(str(path))
    meta = result.meta
    click.echo(click.style(f"{result.duration_s:.2f}s of audio, {meta.engine}"
                           f"{':' + meta.model if meta.model else ''} on {meta.worker_id}, attempt {meta.attempt}",
                           dim=True), err=True)


@click.command()
@click.argument("worker", required=False)
@click.option("--host", help="Drain every worker on this host (as the workers report it).")
@click.pass_context
@handle_errors
def drain(ctx: click.Context, worker: Optional[str], host: Optional[str]) -> None:
    """Drain WORKER (its id or name) or --host HOST: no new jobs, finish those in hand, then disconnect."""
    if (worker is None) == (host is None):
        raise click.UsageError("give a WORKER or --host HOST (one of them)")
    ids = client_for(ctx).drain(worker, host=host)
    click.echo(f"draining {len(ids)} worker(s): {', '.join(ids)}")


@click.command()
@click.argument("model")
@click.pass_context
@handle_errors
def pause(ctx: click.Context, model: str) -> None:
    """Stop dispatching jobs for routing key MODEL (ENGINE or ENGINE:MODEL); they stay queued."""
    paused = client_for(ctx).pause(model)
    click.echo(f"paused: {', '.join(paused)}")


@click.command()
@click.argument("model")
@click.pass_context
@handle_errors
def resume(ctx: click.Context, model: str) -> None:
    """Dispatch jobs for routing key MODEL again."""
    paused = client_for(ctx).resume(model)
    click.echo(f"resumed {model}; paused: {', '.join(paused) or 'none'}")


COMMANDS = [keys, status, ping, reload, jobs, retry, health, get, drain, pause, resume]
