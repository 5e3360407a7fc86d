"""Many jobs through several real tone workers, by the seed API: every file present, valid and the right length."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest
import soundfile

from tts_protocol import output_filename

from tts_client import seed_api

from harness import TONE_RATE, BrokerProc, tone_frames, wait_for

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def seed(broker: BrokerProc) -> Iterator[None]:
    seed_api.configure(url=broker.frontend, timeout_s=120)
    yield
    seed_api.shutdown_worker_manager()


def test_500_jobs_through_4_tone_workers(broker: BrokerProc, tone_workers, seed: None, tmp_path: Path) -> None:
    tone_workers(broker, n=4)
    messages = [{"text": f"Message {i}. " + "word " * (i % 17), "speaker": f"spk{i % 5}", "id": i}
                for i in range(500)]
    chunks = seed_api.create_message_chunks(messages, 100)
    assert [len(c) for c in chunks] == [100] * 5
    out = tmp_path / "out"
    started = time.perf_counter()
    paths = seed_api.process_message_chunks(chunks, str(out))
    elapsed = time.perf_counter() - started
    assert len(paths) == 500
    assert sorted(p.name for p in out.iterdir()) == sorted(output_filename(0, i, "wav") for i in range(500))
    for message, path in zip(messages, paths, strict=True):
        assert Path(path).name == output_filename(0, message["id"], "wav")
        info = soundfile.info(path)
        assert (info.samplerate, info.channels, info.format) == (TONE_RATE, 1, "WAV")
        assert info.frames == tone_frames(message["text"])
    status = seed_api.get_worker_status()
    assert len(status["workers"]) == 4 and status["jobs"]["done"] >= 500

    def spread() -> bool:  # worker counters arrive with heartbeats
        workers = seed_api.get_worker_status()["workers"]
        return sum(w["jobs_done"] for w in workers) >= 500 and all(w["jobs_done"] > 0 for w in workers)

    wait_for(spread, 10, what="every worker did some of the work")
    print(f"500 tone jobs through 4 workers: {elapsed:.2f}s ({500 / elapsed:.0f} jobs/s)")


def test_seed_generate_audio_and_health(broker: BrokerProc, tone_workers, seed: None, tmp_path: Path) -> None:
    assert not seed_api.health_check(timeout_s=2)  # broker up but no workers yet
    tone_workers(broker)
    assert seed_api.health_check()
    path = seed_api.generate_audio("Hello, world!", "default", 1, 1, str(tmp_path / "output"))
    assert path == str((tmp_path / "output" / "1_1.wav").resolve())
    assert soundfile.info(path).frames == tone_frames("Hello, world!")
    hostile = seed_api.generate_audio("escape", "default", "../../etc/passwd", "..", str(tmp_path / "output"))
    assert Path(hostile).parent == (tmp_path / "output").resolve()
    assert Path(hostile).name == "___.._etc_passwd.wav"
    seed_api.shutdown_worker_manager()
    seed_api.shutdown_worker_manager()  # idempotent; the next call builds a fresh default client
    assert seed_api.get_worker_status()["workers"][0]["engine"] == "tone"


def test_process_message_chunks_reports_failures_but_writes_the_rest(broker: BrokerProc, tone_workers, seed: None,
                                                                     tmp_path: Path) -> None:
    tone_workers(broker, fail_on="FAIL")
    messages = [{"text": "fine one", "id": "a"}, {"text": "this will FAIL", "id": "b"},
                {"text": "fine two", "id": "c", "stream_index": 2}]
    with pytest.raises(seed_api.BatchFailed) as info:
        seed_api.process_message_chunks([messages], str(tmp_path))
    assert [Path(p).name for p in info.value.paths] == ["0_a.wav", "2_c.wav"]
    assert [(line_id, exc.code) for line_id, exc in info.value.failures] == [("b", "engine_error")]
    paths = seed_api.process_message_chunks([messages], str(tmp_path), on_error="skip")
    assert [Path(p).name for p in paths] == ["0_a.wav", "2_c.wav"]
