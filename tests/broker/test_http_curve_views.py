"""Attack (issue 19, item 16): an open `--http` showed what CURVE hides from non-admin keys.

Under CURVE the dashboard's data endpoints need a bearer token (without a token file they answer 403), and a
non-loopback --http without a token file logs a SECURITY warning, as the ZeroMQ ports do. In-process broker.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest

from tts_protocol.curve import generate

pytestmark = pytest.mark.timeout(60)


def get(url: str, token: str = "") -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def curve_settings(root: Path) -> dict[str, Any]:
    generate("broker", root / "broker")
    for folder in ("clients", "workers"):
        (root / folder).mkdir(parents=True)
    return {"curve_secret": str(root / "broker" / "broker.key_secret"), "client_keys": str(root / "clients"),
            "worker_keys": str(root / "workers"), "http": "127.0.0.1:0", "journal_enabled": False,
            "cache_enabled": False}


def test_under_curve_the_data_views_need_a_token(inproc_broker_factory: Callable[..., Any], tmp_path: Path) -> None:
    closed = inproc_broker_factory(**curve_settings(tmp_path / "a")).broker.http_url
    assert get(closed + "api/status") == 403 and get(closed + "metrics") == 403 and get(closed + "api/dashboard") == 403
    assert get(closed + "healthz") == 200 and get(closed) == 200  # the page shell carries no data
    tokens = tmp_path / "tokens"
    tokens.write_text("s3cret\n")
    opened = inproc_broker_factory(**curve_settings(tmp_path / "b"), http_token_file=str(tokens)).broker.http_url
    assert get(opened + "api/status") == 401 and get(opened + "api/status", "s3cret") == 200


def test_a_non_loopback_http_without_tokens_warns(inproc_broker_factory: Callable[..., Any],
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="tts_broker.httpd")
    inproc_broker_factory(http="0.0.0.0:0", journal_enabled=False, cache_enabled=False)
    assert any("SECURITY: --http" in r.getMessage() and "no --http-token-file" in r.getMessage()
               for r in caplog.records)
