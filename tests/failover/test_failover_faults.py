"""Fault drills for leadership on a real PostgreSQL: a frozen active, an active cut off from the database, and
the database itself restarted mid-run."""

from __future__ import annotations

import datetime
import signal
import time
from typing import Callable

import pytest

from tts_client import TtsClient

from conftest_failover import (  # noqa: F401  (fixtures)
    FreezableProxy,
    PgBroker,
    endpoint_list,
    pg_brokers,
    pg_proxy,
    tone_worker_on,
)
from harness import Proc, tone_frames, wait_for
from pg_throwaway import ThrowawayPostgres

pytestmark = pytest.mark.timeout(150)


def log_time(log: str, marker: str) -> datetime.datetime:
    """The timestamp of the first log line that contains `marker`."""
    for line in log.splitlines():
        if marker in line:
            return datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    raise AssertionError(f"no log line with {marker!r}:\n{log[-3000:]}")


def check_results(handles: list, texts: list[str]) -> None:
    results = [h.result() for h in handles]
    assert [r.job_id for r in results] == [h.job_id for h in handles]
    for text, result in zip(texts, results, strict=True):
        assert result.num_frames == tone_frames(text), text


def test_a_frozen_active_is_replaced_and_never_acts_again(
        pg_brokers: Callable[..., PgBroker], tone_worker_on: Callable[..., Proc],
        make_client: Callable[..., TtsClient]) -> None:
    a = pg_brokers("a").start().wait_active()
    b = pg_brokers("b").start().wait_standby()
    tone_worker_on(endpoint_list(a, b, side="backend"))
    client = make_client(endpoint_list(a, b), timeout_s=90.0)
    before = [f"before the freeze {i}." for i in range(20)]
    handles = [client.submit(text) for text in before]
    wait_for(lambda: all(h.done() for h in handles), 60, what="the first jobs done")
    assert a.proc is not None and b.proc is not None
    a.proc.signal(signal.SIGSTOP)
    frozen_at = time.monotonic()
    during = [f"while frozen {i}." for i in range(20)]
    handles += [client.submit(text) for text in during]  # sent towards the frozen one; resubmitted to b
    b.wait_active(timeout_s=20)
    took_over_s = time.monotonic() - frozen_at
    a.proc.signal(signal.SIGCONT)
    wait_for(lambda: not a.proc.alive(), 15, what="the old active steps down")  # type: ignore[union-attr]
    assert a.proc.popen.returncode == 7, a.proc.log()
    assert "stepped down" in a.proc.log()
    after = [f"after the freeze {i}." for i in range(20)]
    handles += [client.submit(text) for text in after]
    check_results(handles, before + during + after)
    # The lease (3 s) had to run out since the frozen one's last renewal (at most 1 s before the freeze).
    assert 1.5 < took_over_s < 10, took_over_s


def test_an_active_cut_off_from_postgresql_steps_down_before_the_standby_takes_over(
        pg_brokers: Callable[..., PgBroker], pg_proxy: Callable[[], FreezableProxy], postgres: ThrowawayPostgres,
        pg_url: str) -> None:
    proxy = pg_proxy()
    database = pg_url.rsplit("/", 1)[1]
    a = pg_brokers("a", url=postgres.url(database, port=proxy.port)).start().wait_active()
    b = pg_brokers("b").start().wait_standby()
    assert a.proc is not None and b.proc is not None
    proxy.freeze()
    wait_for(lambda: not a.proc.alive() and b.active(), 30, what="a steps down, b takes over")  # type: ignore[union-attr]
    assert a.proc.popen.returncode == 7, a.proc.log()
    # When each happened, from the two brokers' own log lines (one clock): a stopped acting first.
    stepped_down_at = log_time(a.proc.log(), "(epoch 1): no word from the journal database")
    took_over_at = log_time(b.proc.log(), "this broker is active now (epoch 2)")
    assert stepped_down_at < took_over_at, (stepped_down_at, took_over_at)


def test_postgresql_restarted_mid_run_is_waited_out(
        pg_brokers: Callable[..., PgBroker], tone_worker_on: Callable[..., Proc], postgres: ThrowawayPostgres,
        make_client: Callable[..., TtsClient]) -> None:
    a = pg_brokers("a", "--leader-lease-s", "20").start().wait_active()
    tone_worker_on(a.backend, concurrency=2)
    client = make_client(a.frontend, timeout_s=90.0)
    texts = [f"through a database restart {i}." for i in range(300)]
    handles = [client.submit(text) for text in texts]
    wait_for(lambda: sum(h.done() for h in handles) >= 50, 60, what="50 results before the restart")
    postgres.restart()
    check_results(handles, texts)
    assert a.proc is not None and a.proc.alive()
    log = a.proc.log()
    assert "journal commit failed" in log and "journal session regained (epoch 1 still ours)" in log
