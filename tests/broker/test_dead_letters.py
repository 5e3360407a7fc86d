"""Dead letters: failed jobs are kept apart from finished audio, for --dead-letter-ttl-s (journaled), so they
stay in `tts jobs --failed`, RETRY and GET_RESULT after the result TTL has dropped finished results."""

from __future__ import annotations

from typing import Callable

import pytest
from test_job_table import BIG, T0, finish

from tts_protocol.constants import JobState

from tts_broker.jobs import JobTable
from tts_client import TtsClient
from tts_client.errors import JobFailed, RemoteError

from harness import BrokerProc, wait_for

pytestmark = pytest.mark.timeout(120)


@pytest.mark.unit
def test_failed_jobs_outlive_the_result_ttl_and_then_go() -> None:
    table = JobTable(ttl_s=10, max_jobs=BIG, max_bytes=BIG, dead_letter_ttl_s=1000)
    finish(table, "done-1", T0, audio_bytes=100)
    finish(table, "failed-1", T0, state=JobState.FAILED)
    finish(table, "cancelled-1", T0, state=JobState.CANCELLED)
    table.expire(T0 + 11)
    assert table.get("done-1") is None and table.get("cancelled-1") is None
    assert table.get("failed-1") is not None and table.dead_letter_count == 1
    assert [j.job_id for j in table.recent(JobState.FAILED, 10)] == ["failed-1"]
    assert [j.job_id for j in table.latest(10, JobState.FAILED)] == ["failed-1"]
    table.reopen(table.get("failed-1"))  # RETRY takes it out of the dead letters
    assert table.dead_letter_count == 0 and table.get("failed-1") is not None
    finish(table, "failed-2", T0 + 20, state=JobState.FAILED)
    table.expire(T0 + 1021)
    assert table.get("failed-2") is None and table.dead_letter_count == 0


@pytest.mark.unit
def test_without_a_dead_letter_ttl_failed_jobs_follow_the_result_ttl() -> None:
    table = JobTable(ttl_s=10, max_jobs=BIG, max_bytes=BIG, dead_letter_ttl_s=0)
    finish(table, "failed-1", T0, state=JobState.FAILED)
    table.expire(T0 + 11)
    assert table.get("failed-1") is None


def test_dead_letters_survive_the_result_ttl_and_a_restart(broker_factory: Callable[..., BrokerProc],
                                                           tone_workers, make_client: Callable[..., TtsClient]
                                                           ) -> None:
    broker = broker_factory("--result-ttl-s", "1", "--dead-letter-ttl-s", "3600")
    tone_workers(broker, fail_on="POISON")
    client = make_client(broker.frontend)
    with pytest.raises(JobFailed):
        client.synthesize("POISON line", job_id="dl-1")
    client.synthesize("A good line.", job_id="ok-1")
    wait_for(lambda: _gone(client, "ok-1"), 20, what="the finished result dropped after result_ttl_s")
    assert [v.job_id for v in client.jobs("failed")] == ["dl-1"]
    with pytest.raises(RemoteError) as caught:
        client.get_result("dl-1")
    assert caught.value.code != "not_found"  # the broker still knows the job and says it failed
    broker.kill()
    broker.start()
    client = make_client(broker.frontend)
    assert [v.job_id for v in client.jobs("failed")] == ["dl-1"]  # journaled
    assert client.retry("dl-1").state is JobState.QUEUED


def _gone(client: TtsClient, job_id: str) -> bool:
    try:
        client.job_status(job_id)
    except RemoteError as exc:
        return exc.code == "not_found"
    return False
