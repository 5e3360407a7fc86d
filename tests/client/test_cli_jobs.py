"""Issue 5 from the user's side: `tts jobs`, the dead-letter list, `tts retry`, and the result cache with a
real tone worker (which marks its output deterministic)."""

from __future__ import annotations

import json

import pytest

from tts_client import JobFailed

from harness import registered_workers, wait_for
from test_cli_commands import tts

pytestmark = pytest.mark.timeout(120)


def test_failed_jobs_are_listed_and_retried_from_the_cli(broker_factory, start_worker, make_client) -> None:
    broker = broker_factory("--max-attempts", "1")
    flaky = start_worker(broker, "tone", {"fail_on": "FLAKY"}, extra_args=["--single"])
    client = make_client(broker.frontend)
    wait_for(lambda: registered_workers(client) == 1, 30)
    handle = client.submit("A FLAKY line.", job_id="dead-1", model="tone")
    with pytest.raises(JobFailed):
        handle.result()
    listed = tts("jobs", "--failed", "--json", url=broker.frontend)
    assert listed.returncode == 0, listed.stderr
    views = json.loads(listed.stdout)
    assert [v["job_id"] for v in views] == ["dead-1"]
    assert views[0]["error"]["code"] == "engine_error" and views[0]["workers"]
    table = tts("jobs", url=broker.frontend)
    assert "dead-1" in table.stdout and "failed" in table.stdout
    # Replace the worker with one that can do the line, then retry the dead letter.
    flaky.stop()
    start_worker(broker, "tone", extra_args=["--single"])
    wait_for(lambda: registered_workers(client) == 1, 30)
    retried = tts("retry", "dead-1", url=broker.frontend)
    assert retried.returncode == 0 and "queued" in retried.stdout, retried.stderr
    wait_for(lambda: client.job_status("dead-1").state.value == "done", 30)
    assert json.loads(tts("jobs", "--failed", "--json", url=broker.frontend).stdout) == []
    assert tts("retry", "dead-1", url=broker.frontend).returncode != 0  # done jobs are not retried


def test_identical_requests_are_answered_from_the_result_cache(broker, start_worker, make_client) -> None:
    start_worker(broker, "tone", extra_args=["--single"])
    client = make_client(broker.frontend)
    wait_for(lambda: registered_workers(client) == 1, 30)
    first = client.synthesize("The same line twice.", speaker="amy", model="tone")
    second = client.synthesize("The same line twice.", speaker="amy", model="tone")
    assert not first.meta.cached and second.meta.cached
    assert second.pcm == first.pcm and second.meta.worker_id == "cache"
    other = client.synthesize("The same line twice.", speaker="bob", model="tone")
    assert not other.meta.cached
    cache = client.broker_status().jobs["cache"]
    assert cache["hits"] == 1 and cache["stores"] == 2
    assert client.broker_status().workers[0].jobs_done == 2  # the hit cost the worker nothing
    status = tts("status", url=broker.frontend)
    assert "result cache" in status.stdout and "hits 1" in status.stdout
