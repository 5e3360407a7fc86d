"""Fish Speech batched generation: one worker with max_batch=8 vs max_batch=1, through the real broker.

Starts a broker (no journal, no result cache) on loopback ports and, per round and per setting, one
`tts_worker --engine fish-speech` process; submits 16 jobs of mixed length at once through the Python client
and reports jobs/s, seconds of audio per second and p50 / p90 latency (submit to result, queueing included)
for max_batch=8 and max_batch=1 in the same run, and the ratios. Target (tiny checkpoints, CPU): >= 3x jobs/s.

Runs in the Fish venv (scripts/test-fish.sh builds it and the tiny checkpoints):

    .venv-fish/bin/python benchmarks/bench_fish_batch.py [--family 1.5|s1-mini|all] [--rounds 2]

On a GPU host with the real checkpoints (see docs/fish-speech.md):

    python benchmarks/bench_fish_batch.py --checkpoints /srv/tts/checkpoints --family s1-mini --device cuda \\
        --torch-threads 0 --max-new-tokens 200,400,800 --jobs 32 --max-batch 8 [--compile]

The tiny models speak noise and sometimes stop early, so both settings do not produce exactly the same
amount of audio: audio-s/s is printed beside jobs/s. Numbers depend on what else runs on the machine.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

from benchkit import ROOT, Stack, percentile, wait_workers

FOLDERS = {"1.5": "fish-speech-1.5", "s1-mini": "openaudio-s1-mini"}
TEXTS = [
    "Hello there.", "Where did you put the keys?", "I told you we should have left a little earlier today.",
    "Keep your voice down.", "Nobody answers the door after midnight, not even the landlord.",
    "That is not what I meant.", "We need to talk about the plan, and about who pays for it.", "Yes.",
]


def start_fish_worker(stack: Stack, client: Any, options: dict[str, Any], name: str) -> subprocess.Popen[bytes]:
    """One fish-speech worker process named `name`, once the broker lists it."""
    proc = stack.start_worker("fish-speech", concurrency=1, name=name, opts=options, log=stack.tmp / f"{name}.log")
    wait_workers(client, 1, timeout_s=300, proc=proc, match=lambda w: w.name.startswith(name), every_s=0.2)
    return proc


def stop_fish_worker(stack: Stack, client: Any, proc: subprocess.Popen[bytes]) -> None:
    stack.stop(proc, grace_s=60)
    deadline = time.monotonic() + 15  # the next worker is told apart by its name if this one lingers
    while client.broker_status(timeout_s=5).workers and time.monotonic() < deadline:
        time.sleep(0.1)


def jobs(n: int, lengths: list[int]) -> list[tuple[str, dict[str, Any]]]:
    """n jobs of mixed text and token budgets (fixed seeds: the same set for every setting)."""
    return [(TEXTS[i % len(TEXTS)], {"seed": 100 + i, "max_new_tokens": lengths[(i * 7) % len(lengths)]})
            for i in range(n)]


def run_jobs(client: Any, work: list[tuple[str, dict[str, Any]]], model: str) -> dict[str, float]:
    """Submit every job at once; per-job latency = submit to result."""
    done: list[float] = []
    lock = threading.Lock()

    def finished(_future: Any) -> None:
        with lock:
            done.append(time.monotonic())

    started = time.monotonic()
    handles = []
    for text, voice in work:
        handle = client.submit(text, model=model, voice=voice, cache=False)
        handle.future.add_done_callback(finished)
        handles.append(handle)
    audio_s = sum(h.result().duration_s for h in handles)
    elapsed = max(done) - started
    latencies = sorted(t - started for t in done)
    return {"jobs_s": len(work) / elapsed, "audio_s_s": audio_s / elapsed, "elapsed": elapsed,
            "p50": statistics.median(latencies), "p90": percentile(latencies, 0.9),
            "audio_s": audio_s}


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", default=str(ROOT / ".cache" / "fish-tiny"),
                        help="folder holding fish-speech-1.5/ and/or openaudio-s1-mini/")
    parser.add_argument("--family", choices=["1.5", "s1-mini", "all"], default="all")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--max-new-tokens", default="24,48,96,160", help="token budgets, mixed over the jobs")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per setting (best is kept)")
    parser.add_argument("--torch-threads", type=int, default=1, help="0 = torch's default")
    parser.add_argument("--compile", action="store_true", help="torch.compile (CUDA only)")
    args = parser.parse_args(argv)

    from tts_client import TtsClient

    lengths = [int(x) for x in args.max_new_tokens.split(",")]
    families = list(FOLDERS) if args.family == "all" else [args.family]
    work = jobs(args.jobs, lengths)
    summary: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-fish-batch-") as tmp_name:
        tmp = Path(tmp_name)
        stack = Stack(tmp, cwd=ROOT, log_name="broker.log")
        try:
            stack.start_broker(timeout_s=30)
            client = TtsClient(stack.frontend, timeout_s=600.0)
            for family in families:
                best: dict[int, dict[str, float]] = {}
                for round_no in range(args.rounds):
                    for max_batch in (args.max_batch, 1):
                        options = {"checkpoint": Path(args.checkpoints) / FOLDERS[family], "model_version": family,
                                   "device": args.device, "token_cache_dir": "none", "max_batch": max_batch,
                                   "compile": str(args.compile).lower(), "voices_dir": tmp / "voices"}
                        if args.torch_threads:
                            options["torch_threads"] = args.torch_threads
                        name = f"fish-{family}-b{max_batch}-r{round_no}"
                        proc = start_fish_worker(stack, client, options, name)
                        model = f"fish-speech:{family}"
                        run_jobs(client, work[:2], model)  # warm-up: first-call costs out of the figures
                        figures = run_jobs(client, work, model)
                        stop_fish_worker(stack, client, proc)
                        print(f"{family} max_batch={max_batch} round {round_no + 1}: {args.jobs} jobs in "
                              f"{figures['elapsed']:.2f} s = {figures['jobs_s']:.2f} jobs/s, "
                              f"{figures['audio_s_s']:.2f} audio-s/s ({figures['audio_s']:.1f} s of audio), "
                              f"p50 {figures['p50']:.2f} s, p90 {figures['p90']:.2f} s", flush=True)
                        if max_batch not in best or figures["jobs_s"] > best[max_batch]["jobs_s"]:
                            best[max_batch] = figures
                batched, single = best[args.max_batch], best[1]
                summary.append(
                    f"{family}: max_batch={args.max_batch} vs 1: {batched['jobs_s'] / single['jobs_s']:.2f}x jobs/s "
                    f"({batched['jobs_s']:.2f} vs {single['jobs_s']:.2f}), "
                    f"{batched['audio_s_s'] / single['audio_s_s']:.2f}x audio-s/s, p50 latency "
                    f"{batched['p50']:.2f} s vs {single['p50']:.2f} s (target >= 3x jobs/s)")
            client.close()
        finally:
            stack.close(grace_s=0)
    print("\n".join(summary))


if __name__ == "__main__":
    main()
