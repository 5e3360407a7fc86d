"""`tts gateway`: the gateway's subcommand of the `tts` command line, loaded only when it is asked for.

The `tts` group names this command without importing it (tts_client.cli's lazy commands), so `tts say` never
imports the gateway; FastAPI and uvicorn (the `gateway` extra) are imported only once the command runs.
"""

from __future__ import annotations

from typing import Any, Optional

import click

from tts_protocol.errors import one_line
from tts_protocol.settings_help import add_settings_help

from tts_client.cli_common import EXIT_JOB_FAILED, EXIT_USAGE, fail
from tts_gateway.settings import GatewaySettings


@click.command()
@click.option("--listen", help="HOST:PORT to bind; port 0 picks a free one.")
@click.option("--broker", help="Broker frontend (unset: the one `tts --broker` names).")
@click.option("--api-key-file", type=click.Path(dir_okay=False, exists=True),
              help="Accepted bearer tokens, one per line.")
@click.option("--ready-file", type=click.Path(dir_okay=False), help="Write the bound URL here as JSON once ready.")
@click.pass_context
def gateway(ctx: click.Context, listen: Optional[str], broker: Optional[str], api_key_file: Optional[str],
            ready_file: Optional[str]) -> None:
    """Serve OpenAI's POST /v1/audio/speech (plus /v1/models, /v1/audio/voices, /health) over HTTP."""
    try:
        import fastapi  # noqa: F401 (the extra's packages, checked before anything starts)
        import uvicorn  # noqa: F401

        from tts_gateway.server import serve
    except ImportError as exc:
        fail(f"the gateway needs its extra: pip install -e '.[gateway]' in the tts-broker checkout ({exc})",
             EXIT_USAGE)
    given = {"listen": listen, "broker": broker, "api_key_file": api_key_file, "ready_file": ready_file}
    overrides: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    try:
        settings = GatewaySettings(**overrides)
        settings.host_port()
        settings.tokens()
    except (ValueError, OSError) as exc:  # pydantic's ValidationError is a ValueError; OSError: the key file
        raise click.UsageError(one_line(exc)) from exc
    try:
        serve(settings, ctx.obj, on_listening=lambda url: click.secho(f"gateway listening on {url}", fg="cyan",
                                                                      err=True))
    except OSError as exc:
        fail(f"gateway: cannot listen on {settings.listen}: {exc}", EXIT_JOB_FAILED)


add_settings_help(gateway, GatewaySettings)
