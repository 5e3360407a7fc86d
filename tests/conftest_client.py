"""Client-side fixtures: a TtsClient on the test broker and tone workers that are known to be registered.

Test modules import what they use (`from conftest_client import client, tone_workers`); pytest then finds
the fixtures. Every client a test opens is closed at teardown, and an open client's I/O thread left behind
fails the test.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterator, Optional

import pytest

from tts_client import TtsClient
from tts_worker.engines.tone import SAMPLE_RATE, sentence_duration_s, sentence_split

from conftest import BrokerProc, Proc, wait_for


def tone_frames(text: str, length_scale: float = 1.0) -> int:
    """How many samples the tone test engine produces for `text` (one tone per sentence)."""
    return sum(max(1, int(round(sentence_duration_s(s, length_scale) * SAMPLE_RATE))) for s in sentence_split(text))


TONE_RATE = SAMPLE_RATE


def registered_workers(client: TtsClient) -> int:
    try:
        return len(client.broker_status(timeout_s=2).workers)
    except Exception:
        return 0


@pytest.fixture
def make_client() -> Iterator[Callable[..., TtsClient]]:
    """make_client(url, **settings) -> TtsClient, closed at teardown (short timeouts suit tests)."""
    made: list[TtsClient] = []

    def make(url: str, **overrides: Any) -> TtsClient:
        overrides.setdefault("timeout_s", 60.0)
        overrides.setdefault("request_timeout_s", 5.0)
        c = TtsClient(url, **overrides)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()
    leaked = [t for t in threading.enumerate() if t.name == "tts-client-io"]
    assert not leaked, f"client I/O threads still running: {leaked}"


@pytest.fixture
def client(broker: BrokerProc, make_client: Callable[..., TtsClient]) -> TtsClient:
    """A TtsClient connected to the `broker` fixture."""
    return make_client(broker.frontend)


@pytest.fixture
def tone_workers(start_worker: Callable[..., Proc], make_client: Callable[..., TtsClient]
                 ) -> Callable[..., Proc]:
    """tone_workers(broker, n=1, **engine_opts): start one supervisor with n tone workers, wait until all
    n are registered with the broker, return the supervisor's Proc."""

    def start(broker: BrokerProc, n: int = 1, timeout_s: float = 60.0, expect_total: Optional[int] = None,
              **opts: Any) -> Proc:
        watcher = make_client(broker.frontend)
        before = registered_workers(watcher)
        proc = start_worker(broker, engine="tone", opts=opts or None, concurrency=n)
        total = expect_total if expect_total is not None else before + n
        wait_for(lambda: registered_workers(watcher) >= total or not proc.alive(), timeout_s,
                 what=f"{total} tone workers registered")
        if not proc.alive():
            raise AssertionError(f"tone worker exited:\n{proc.log()}")
        return proc

    return start
