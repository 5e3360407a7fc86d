"""What every `tts` command shares: exit codes, error handling, the client for a command, option parsing."""

from __future__ import annotations

import functools
import json
import sys
from typing import Any, Callable, Optional, TypeVar

import click

from tts_protocol import routing

from tts_client.client import TtsClient
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


def fail(message: str, code: int) -> None:
    click.echo(click.style(f"tts: {message}", fg="red"), err=True)
    sys.exit(code)


def handle_errors(func: F) -> F:
    """Map client errors to the documented exit codes."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BrokerUnavailable as exc:
            fail(str(exc), EXIT_UNAVAILABLE)
        except (InvalidRequest, UnsafePath) as exc:
            fail(str(exc), EXIT_USAGE)
        except (JobFailed, RemoteError, ClientTimeout, NoWorkers) as exc:
            fail(str(exc), EXIT_JOB_FAILED)
        except TtsClientError as exc:
            fail(str(exc), EXIT_JOB_FAILED)
        except OSError as exc:  # writing the audio file: one line, not a traceback
            fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc), EXIT_JOB_FAILED)

    return wrapper  # type: ignore[return-value]


def client_for(ctx: click.Context) -> TtsClient:
    settings: ClientSettings = ctx.obj
    client = TtsClient(settings=settings)
    ctx.call_on_close(client.close)
    return client


def require_broker(client: TtsClient) -> None:
    """Fail fast (exit 3) instead of waiting a whole job timeout for a broker that is not there."""
    client.ping()


def require_route(client: TtsClient, model: Optional[str]) -> None:
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
    if not any(routing.serves(w.engine, w.model, model) for w in workers):
        connected = sorted({routing.worker_key(w.engine, w.model) for w in workers})
        raise NoWorkers(f"no_workers: no connected worker serves {model!r}; connected: {', '.join(connected)}",
                        connected=connected)
