"""Fish Speech through the whole system: a real broker, a real `tts_worker --engine fish-speech` process
(in this venv) on a tiny checkpoint, and the Python client."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from fishkit import FOLDERS, SKIP_REASON, fish_available, tiny_dir, write_voices
from harness import BrokerProc, Proc, wait_for

pytestmark = [pytest.mark.skipif(not fish_available(), reason=SKIP_REASON), pytest.mark.timeout(180)]
_ = (tiny_dir,)

from tts_client import TtsClient  # noqa: E402
from tts_client.errors import JobFailed  # noqa: E402

FAST = {"max_new_tokens": 12}
LONG_TEXT = ("The first sentence is here and it is long enough. The second sentence follows right after it. "
             "A third one closes the paragraph for good.")


def fish_worker(start_worker: Callable[..., Proc], broker: BrokerProc, client: TtsClient, family: str,
                tiny_dir: Path, tmp_path: Path, **opts: Any) -> Proc:
    """Start a Fish worker and wait until the broker lists it."""
    options = {"checkpoint": tiny_dir / FOLDERS[family], "model_version": family,
               "voices_dir": tmp_path / "voices", "token_cache_dir": tmp_path / "token-cache",
               "torch_threads": 1, **opts}
    proc = start_worker(broker, engine="fish-speech", opts=options)
    wait_for(lambda: any(w.engine == "fish-speech" for w in client.broker_status(timeout_s=2).workers)
             or not proc.alive(), 90, what="fish worker registered")
    assert proc.alive(), f"fish worker exited:\n{proc.log()}"
    return proc


def pcm(result: Any) -> np.ndarray:
    return np.frombuffer(result.pcm, dtype="<i2")


@pytest.mark.parametrize("family", list(FOLDERS))
def test_jobs_through_broker_and_worker(broker: BrokerProc, start_worker: Callable[..., Proc],
                                        make_client: Callable[..., TtsClient], tiny_dir: Path, tmp_path: Path,
                                        family: str) -> None:
    write_voices(tmp_path / "voices")
    client = make_client(broker.frontend, timeout_s=90.0)
    proc = fish_worker(start_worker, broker, client, family, tiny_dir, tmp_path)
    worker = next(w for w in client.broker_status().workers if w.engine == "fish-speech")
    assert (worker.model, worker.device) == (family, "cpu")

    first = client.synthesize("Hello world.", voice={**FAST, "seed": 7})
    assert first.sample_rate == 44100 and first.channels == 1
    assert 0 < first.num_frames <= FAST["max_new_tokens"] * 2048
    again = client.synthesize("Hello world.", model=f"fish-speech:{family}", voice={**FAST, "seed": 7})
    assert again.pcm == first.pcm  # same seed, same audio
    assert client.synthesize("Hello world.", voice={**FAST, "seed": 8}).pcm != first.pcm

    with client.stream(LONG_TEXT, voice={"seed": 1, "chunk_length": 60, "max_new_tokens": 6}) as stream:
        chunks = list(stream)
        result = stream.result
    assert len(chunks) >= 2 and [c.seq for c in chunks] == list(range(len(chunks)))
    assert b"".join(c.pcm for c in chunks) == result.pcm  # one PARTIAL per generated segment

    for _ in range(2):
        assert pcm(client.synthesize("Speak like Alice.", speaker="alice", voice=FAST)).size > 0
    assert proc.log().count("encoded reference alice/reference.wav") == 1  # the second job hit the cache
    assert len(list((tmp_path / "token-cache").glob("*.npy"))) == 1

    with pytest.raises(JobFailed) as failed:
        client.synthesize("Who am I?", speaker="nobody", voice=FAST)
    assert failed.value.code == "engine_error" and "unknown speaker 'nobody'" in str(failed.value)
    with pytest.raises(JobFailed) as failed:
        client.synthesize("Too hot.", voice={"temperature": 9})
    assert failed.value.code == "engine_error"
    assert proc.alive()


def test_bad_checkpoint_folder_stops_the_worker_with_the_reason(broker: BrokerProc,
                                                                  start_worker: Callable[..., Proc],
                                                                  tmp_path: Path) -> None:
    missing = tmp_path / "no-such-checkpoint"
    proc = start_worker(broker, engine="fish-speech", opts={"checkpoint": missing, "model_version": "1.5"})
    wait_for(lambda: not proc.alive(), 60, what="worker exit")
    assert proc.popen.returncode not in (0, None)
    assert f"{missing} does not exist" in proc.log()


def test_hot_reload_switches_family(broker: BrokerProc, start_worker: Callable[..., Proc],
                                   make_client: Callable[..., TtsClient], tiny_dir: Path, tmp_path: Path) -> None:
    write_voices(tmp_path / "voices")
    client = make_client(broker.frontend, timeout_s=90.0)
    proc = fish_worker(start_worker, broker, client, "1.5", tiny_dir, tmp_path)
    assert client.synthesize("Before.", speaker="alice", voice=FAST).num_frames > 0
    told = client.reload("fish-speech", {"checkpoint": str(tiny_dir / FOLDERS["s1-mini"]),
                                         "model_version": "s1-mini"})
    assert told == 1
    wait_for(lambda: [w.model for w in client.broker_status(timeout_s=2).workers] == ["s1-mini"], 90,
             what="worker back with the S1 model")
    after = client.synthesize("After.", model="fish-speech:s1-mini", speaker="alice", voice=FAST)
    assert after.num_frames > 0 and proc.alive()
    assert proc.log().count("encoded reference alice/reference.wav") == 2  # other family, other tokens
