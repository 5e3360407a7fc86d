"""`tts build` on a real broker with Piper workers (and the tone test engine for lines that must fail).

One broker with two Piper workers and one tone worker serves the whole module (loading Piper costs seconds);
each test builds into a folder of its own. TTS_STUDIO_LINES sets the size of the main manifest (default 60).
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyloudnorm
import pytest
import soundfile
from scipy.signal import resample_poly

from tts_client import TtsClient

from conftest import BrokerProc, Proc, wait_for

pytestmark = pytest.mark.timeout(600)
pytest.importorskip("piper", reason="the piper extra: pip install -e '.[piper]'")

SUBJECTS = ["The old sailor", "My brother", "The young guard", "Our teacher", "The tired farmer", "Your friend"]
ACTIONS = ["found a small boat", "opened the heavy door", "walked to the market", "lost the silver key",
           "painted the red house", "carried the water"]
TIMES = ["this morning.", "after the storm.", "before dinner.", "last night.", "in the summer."]
N_LINES = int(os.environ.get("TTS_STUDIO_LINES", "60"))
LUFS = -18.0
CEILING = -1.0
PAD_MS = 100.0


class Fleet:
    def __init__(self, broker: BrokerProc, workers: list[Proc]) -> None:
        self.broker = broker
        self.workers = workers

    @property
    def url(self) -> str:
        return self.broker.frontend


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("studio-fleet")
    procs: list[Proc] = []
    try:
        broker = BrokerProc(tmp, procs, ["--log-level", "INFO"]).start()
        workers = []
        for n, engine in enumerate(["piper", "piper", "tone"], 1):
            args = [sys.executable, "-m", "tts_worker", "--broker", broker.backend, "--engine", engine,
                    "--concurrency", "1", "--log-level", "INFO", "--name", f"studio-{engine}-{n}"]
            workers.append(Proc(args, Path(tmp) / f"worker-{n}.log"))
            procs.append(workers[-1])
        with TtsClient(broker.frontend, request_timeout_s=5.0) as client:
            def ready() -> bool:
                views = client.broker_status().workers
                piper = [w for w in views if w.engine == "piper" and "speakers" in w.engine_stats]
                return len(piper) == 2 and any(w.engine == "tone" for w in views)

            wait_for(ready, 120, interval_s=0.2, what="two piper workers (with a heartbeat) and a tone worker")
        yield Fleet(broker, workers)
    finally:
        for p in procs:
            p.kill()


def texts(n: int, salt: int = 0) -> list[str]:
    out = []
    for i in range(n):
        k = i + salt * 7
        out.append(f"{SUBJECTS[k % 6]} {ACTIONS[(k // 6) % 6]} {TIMES[(k + salt) % 5]}")
    return out


def write_manifest(path: Path, rows: list[dict[str, Any]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def run_build(fleet: Any, manifest: Path, out: Path, *args: str, timeout_s: float = 400) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "tts_client", "--broker", fleet.url, "build", str(manifest), "-o", str(out),
           "--lufs", str(LUFS), "--true-peak", str(CEILING), "--pad-ms", str(PAD_MS), "--model", "piper",
           "--jobs", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)


def synthesised(fleet: Any) -> int:
    """Jobs the Piper workers have finished (from their heartbeats)."""
    with TtsClient(fleet.url, request_timeout_s=5.0) as client:
        return sum(w.jobs_done for w in client.broker_status().workers if w.engine == "piper")


def report(out: Path) -> dict[str, Any]:
    return json.loads((out / "build-report.json").read_text())


def true_peak_db(x: np.ndarray) -> float:
    up = resample_poly(x, 4, 1)
    return 20 * math.log10(max(np.abs(up).max(), np.abs(x).max()))


def test_build_conforms_and_rebuilds_only_what_changed(fleet: Any, tmp_path: Path) -> None:
    rows = [{"id": f"line{i:03d}", "speaker": "default", "text": t, "note": f"take it slow {i}"}
            for i, t in enumerate(texts(N_LINES))]
    manifest = write_manifest(tmp_path / "script.csv", rows)
    out = tmp_path / "out"
    done = run_build(fleet, manifest, out)
    assert done.returncode == 0, done.stderr[-3000:]
    rep = report(out)
    assert [e["id"] for e in rep["lines"]] == [r["id"] for r in rows]
    assert {e["status"] for e in rep["lines"]} == {"built"}, [e for e in rep["lines"] if e["status"] != "built"]
    assert rep["lines"][0]["extra"] == {"note": "take it slow 0"}
    pad_s = PAD_MS / 1000
    for entry in rep["lines"]:
        x, rate = soundfile.read(out / entry["file"], dtype="float64")
        measured = pyloudnorm.Meter(rate).integrated_loudness(x)
        assert abs(measured - LUFS) <= 0.5, (entry["id"], measured)
        assert true_peak_db(x) <= CEILING + 1e-6, entry["id"]
        # silence: more than 50 dB under the line's peak sample
        loud = np.flatnonzero(np.abs(x) > np.abs(x).max() * 10 ** (-50 / 20))
        head_s, tail_s = loud[0] / rate, (len(x) - 1 - loud[-1]) / rate
        assert head_s <= pad_s + 0.015 and tail_s <= pad_s + 0.015, (entry["id"], head_s, tail_s)
        duration = len(x) / rate
        timings = json.loads((out / entry["timings"]).read_text())
        words = [w["word"] for w in timings["words"]]
        assert words == [w.strip(".").lower() for w in entry["text"].split()]
        previous_end = 0.0
        for w in timings["words"]:
            assert previous_end - 1e-6 <= w["start_s"] <= w["end_s"] <= duration + 1e-6, (entry["id"], w)
            previous_end = w["end_s"]
        assert (out / entry["vtt"]).read_text().startswith("WEBVTT")
        assert entry["wer"] is not None and entry["wer"] <= 0.6
    assert "line000" in (out / "build-report.html").read_text()

    again = run_build(fleet, manifest, out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert report(out)["summary"]["built"] == 0 and report(out)["summary"]["kept"] == N_LINES

    rows[3]["text"] = "The captain closed the gate."
    rows[7]["text"] = "We will sail at dawn."
    write_manifest(manifest, rows)
    (out / rep["lines"][11]["file"]).unlink()
    edited = run_build(fleet, manifest, out)
    assert edited.returncode == 0, edited.stderr[-3000:]
    built = {e["id"] for e in report(out)["lines"] if e["status"] == "built"}
    assert built == {"line003", "line007", "line011"}
    assert report(out)["summary"]["built"] == 3


def test_kill_minus_9_halfway_then_rerun_builds_every_line_once(fleet: Any, tmp_path: Path) -> None:
    n = max(12, N_LINES // 3)
    rows = [{"id": f"k{i}", "speaker": "default", "text": t} for i, t in enumerate(texts(n, salt=1))]
    rows = [{**r, "text": r["text"].replace(".", " again.")} for r in rows]  # not in the other test's cache
    manifest = write_manifest(tmp_path / "kill.csv", rows)
    out = tmp_path / "out"
    jobs_before = synthesised(fleet)
    cmd = [sys.executable, "-m", "tts_client", "--broker", fleet.url, "build", str(manifest), "-o", str(out),
           "--model", "piper", "--jobs", "2", "--max-in-flight", "4"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    lock = out / "tts-build.lock"
    try:
        wait_for(lambda: lock.exists() and len(lock.read_text().splitlines()) >= n // 3, 300, interval_s=0.05,
                 what="a third of the lines built")
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(30)
    before = {json.loads(r)["id"] for r in lock.read_text().splitlines() if r.endswith("}")}
    assert 0 < len(before) < n
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    entries = report(out)["lines"]
    assert sorted(e["id"] for e in entries) == sorted(r["id"] for r in rows)  # every line, once
    kept = {e["id"] for e in entries if e["status"] == "kept"}
    built = {e["id"] for e in entries if e["status"] == "built"}
    assert kept == before and built == {r["id"] for r in rows} - before
    assert all((out / e["file"]).exists() for e in entries)
    leftovers = [p.name for p in out.rglob(".*.tmp")]
    assert not leftovers
    # Nothing synthesised twice: the workers ran one job per attempt the report counts, across both runs (the
    # rerun asked for the killed run's jobs by their ids and got the broker's answers).
    attempts = sum(e["attempts"] for e in entries)
    wait_for(lambda: synthesised(fleet) - jobs_before >= attempts, 20, what="the workers' job counts")
    assert synthesised(fleet) - jobs_before == attempts


def test_tone_lines_are_not_speech_and_fail_the_check(fleet: Any, tmp_path: Path) -> None:
    import tts_client

    rows = [{"id": f"t{i}", "speaker": "default", "text": t} for i, t in enumerate(texts(4, salt=2))]
    manifest = write_manifest(tmp_path / "tone.csv", rows)
    from tts_studio import BuildOptions

    result = tts_client.build(manifest, tmp_path / "out", broker=fleet.url,
                              options=BuildOptions(model="tone", retries=1, pool_size=2))
    assert result.exit_code == 1 and result.failed == 4
    entries = report(tmp_path / "out")["lines"]
    assert [e["status"] for e in entries] == ["failed"] * 4
    assert all(e["attempts"] == 2 for e in entries)  # retried once with a new seed
    assert all("word error rate" in e["error"] or "too short" in e["error"] for e in entries)


def test_bad_manifest_exits_2_with_every_line_number(fleet: Any, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("already here")
    manifest = tmp_path / "bad.csv"
    manifest.write_bytes(
        b"id,speaker,text,file\n"
        b"a,default,Hello there.,\n"      # line 2: fine
        b"a,default,Hello again.,\n"      # line 3: duplicate id
        b"b,default,   ,\n"               # line 4: empty text
        b"c,default,caf\xe9 au lait,\n"   # line 5: not UTF-8
        b"d,nobody,Who am I?,\n"          # line 6: unknown speaker for piper
        b"e,default,Out we go.,../../etc/x\n"  # line 7: leaves DIR
        b"f,default,Same name.,A\n"
        b"g,default,Same name.,a\n"       # line 9: collides with line 8 (case-insensitive file systems)
    )
    done = run_build(fleet, manifest, out, timeout_s=120)
    assert done.returncode == 2, done.stderr
    numbers = sorted({int(line.split(":")[1]) for line in done.stderr.splitlines() if line.startswith(str(manifest))})
    assert numbers == [3, 4, 5, 6, 7, 9], done.stderr
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_without_the_extra_tts_build_names_it(tmp_path: Path) -> None:
    code = ("import sys; sys.modules['pyloudnorm'] = None; from tts_client.cli import main; "
            "main(['build', 'x.csv', '-o', 'out'])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["tts: tts build needs the build extra: pip install 'tts-broker[build]'"]


def test_takes_pick_and_prune_with_a_column_map(fleet: Any, tmp_path: Path) -> None:
    # An Unreal-style export read through a column map; the tone engine and no check: this is about files.
    rows = [{"AudioFileName": f"vo_{i}", "SpeakingVoice": "default", "SpokenDialogue": t}
            for i, t in enumerate(texts(3, salt=3))]
    manifest = write_manifest(tmp_path / "unreal.csv", rows)
    out = tmp_path / "out"
    base = [sys.executable, "-m", "tts_client", "--broker", fleet.url, "build", str(manifest), "-o", str(out),
            "--model", "tone", "--no-check", "--jobs", "1", "--column", "id=AudioFileName",
            "--column", "speaker=SpeakingVoice", "--column", "text=SpokenDialogue", "--name", "{speaker}/{id}"]

    def build(*extra: str) -> dict[str, Any]:
        done = subprocess.run([*base, *extra], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        return {e["id"]: e for e in report(out)["lines"]}

    first = build()
    assert sorted(first) == ["vo_0", "vo_1", "vo_2"] and (out / "default" / "vo_1.wav").exists()
    retaken = build("--retake", "vo_1")
    assert retaken["vo_1"]["status"] == "built" and retaken["vo_1"]["takes"] == 2
    assert retaken["vo_0"]["status"] == "kept"
    assert (out / "_takes" / "default" / "vo_1.take1.wav").exists()
    picked = build("--pick", "vo_1=1")
    assert picked["vo_1"]["takes"] == 1 and picked["vo_1"]["status"] == "kept"
    assert not list((out / "_takes").rglob("*.wav"))  # once a take is chosen the others go
    assert build()["vo_1"]["status"] == "kept"  # the lock file remembers the choice

    write_manifest(manifest, rows[:2])
    build("--prune")
    assert not (out / "default" / "vo_2.wav").exists() and (out / "default" / "vo_1.wav").exists()
