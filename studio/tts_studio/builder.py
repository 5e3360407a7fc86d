"""The build: validate the manifest, then stream it through synthesis and a process pool of post-processing.

Synthesis jobs go to the broker (at most `max_in_flight` at once); each result is handed to the pool as it
arrives, so checking keeps pace with synthesis instead of following it. A line whose check fails is
synthesised again with the next seed, up to `retries` times. Memory stays bounded: the manifest is read as a
stream, and a line's audio lives only between its RESULT and its pool task.

Job ids derive from the line's hash (`build-<sha256>`), so a build killed halfway and run again asks the broker
for the same jobs: those it finished are answered from its records or its result cache, not synthesised twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any, Callable, Optional

from tts_client.client import TtsClient
from tts_client.errors import TtsClientError
from tts_studio.errors import BuildSetupError
from tts_studio.lock import LockFile
from tts_studio.manifest import Manifest, ManifestLine, validate
from tts_studio.naming import NameTemplate, inside
from tts_studio.process import LineTask, ProcessSettings, file_sha256, finish_line, warm_up
from tts_studio.report import BuildReport, write_reports
from tts_studio.speech import script_language_model

log = logging.getLogger(__name__)

TAKES_DIR = "_takes"
LOUDNESS_PRESETS = {"ebu": -23.0, "console": -24.0, "mobile": -18.0, "web": -16.0}
HASH_VERSION = 1


@dataclasses.dataclass(frozen=True, slots=True)
class BuildOptions:
    """How a build runs (the post-processing settings that shape files are in `process`)."""

    process: ProcessSettings = dataclasses.field(default_factory=ProcessSettings)
    name_template: str = "{stream_index}_{id}"
    columns: dict[str, str] = dataclasses.field(default_factory=dict)
    model: Optional[str] = None  # default routing key for lines that name none
    retries: int = 2
    max_in_flight: int = 16
    pool_size: int = 2
    prune: bool = False
    retake: tuple[str, ...] = ()
    pick: dict[str, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(slots=True)
class _Line:
    """A line being built: the manifest line, its key and paths, and its attempts so far."""

    line: ManifestLine
    key: str
    name: str
    take: int
    seed: int
    attempt: int = 0
    synth_s: float = 0.0
    worker: str = ""
    cached: bool = False


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


def job_id_for(key: str, seed: int) -> str:
    """The broker job id of one attempt: a resubmission after a crash asks for the same job."""
    return "build-" + _sha([key, seed])[:40]


class Builder:
    """One `tts build` run against a broker; `run()` returns the report (see report.py)."""

    def __init__(self, client: TtsClient, manifest_path: Path | str, output_dir: Path | str,
                 options: BuildOptions, *, on_progress: Optional[Callable[[int, int], None]] = None) -> None:
        self.client = client
        self.options = options
        self.manifest = Manifest(manifest_path, columns=options.columns)
        self.root = Path(output_dir)
        try:
            self.names = NameTemplate(options.name_template)
        except ValueError as exc:
            raise BuildSetupError(str(exc)) from exc
        self.on_progress = on_progress or (lambda done, total: None)
        self.identities: dict[str, list[str]] = {}

    # ---- before anything is built ------------------------------------------------------------------

    def _fleet(self) -> dict[str, set[str]]:
        """Routing key -> speakers its connected workers accept (empty: any); also notes engine identities."""
        known: dict[str, set[str]] = {}
        for w in self.client.broker_status().workers:
            speakers = w.engine_stats.get("speakers") if isinstance(w.engine_stats, dict) else None
            names = {str(s) for s in speakers} if isinstance(speakers, list) else set()
            ident = f"{w.engine}:{w.model}" if w.model else w.engine
            for key in {w.engine, ident}:
                if key in known and (not known[key] or not names):
                    known[key] = set()
                else:
                    known[key] = known.get(key, set()) | names
                self.identities.setdefault(key, [])
                if ident not in self.identities[key]:
                    self.identities[key].append(ident)
        return known

    def validate(self) -> int:
        """Refuse a bad manifest (ManifestError, every problem with its line) before synthesising anything."""
        known = self._fleet()
        return validate(self.manifest, self.names, known_speakers=known or None, default_model=self.options.model)

    # ---- the build -----------------------------------------------------------------------------------

    def _key(self, line: ManifestLine, name: str) -> str:
        model = line.model or self.options.model or ""
        return _sha({"v": HASH_VERSION, "text": line.text, "speaker": line.speaker, "model": model,
                     "engine": sorted(self.identities.get(model, [])) if model else [], "voice": dict(line.voice),
                     "seed": line.seed, "take": line.take, "process": self.options.process.identity(), "name": name})

    def _paths(self, name: str) -> tuple[Path, Path, Path]:
        fmt = self.options.process.fmt
        return (inside(self.root, f"{name}.{fmt}"), inside(self.root, f"{name}.words.json"),
                inside(self.root, f"{name}.vtt"))

    def _is_current(self, rec: Optional[dict[str, Any]], key: str, audio: Path) -> bool:
        if rec is None or rec.get("key") != key or rec.get("status") != "built" or not audio.exists():
            return False
        try:
            return file_sha256(audio) == rec.get("file_sha256")
        except OSError:
            return False

    def run(self, total: Optional[int] = None) -> BuildReport:
        """Build; `total` is validate()'s answer when the caller already validated (it is not asked twice)."""
        total = self.validate() if total is None else total
        self.root.mkdir(parents=True, exist_ok=True)
        lock = LockFile(self.root)
        report = BuildReport(root=self.root, total=total)
        opts = self.options
        ids_in_manifest: set[str] = set()
        synth: dict[Future, _Line] = {}
        post: dict[Future, _Line] = {}
        started = time.perf_counter()

        def submit(work: _Line) -> None:
            work.attempt += 1
            voice = {**dict(work.line.voice), "seed": work.seed}
            handle = self.client.submit(work.line.text, speaker=work.line.speaker,
                                        model=work.line.model or opts.model, voice=voice,
                                        job_id=job_id_for(work.key, work.seed), cache=True)
            synth[handle.future] = work

        def settle(work: _Line, outcome: dict[str, Any], status: str, error: str = "") -> None:
            audio, timings, vtt = self._paths(work.name)
            rec = {"id": work.line.line_id, "key": work.key, "status": status, "file": f"{work.name}."
                   f"{opts.process.fmt}", "timings": f"{work.name}.words.json" if opts.process.timings else None,
                   "vtt": f"{work.name}.vtt" if opts.process.timings else None, "take": work.take,
                   "seed": work.seed, "attempts": work.attempt, "worker": work.worker, "cached": work.cached,
                   "synth_s": round(work.synth_s, 3), "error": error, **outcome}
            rec.pop("costs", None)
            lock.record(rec)
            report.add_built(rec, outcome.get("costs", {}))

        lm_dir = tempfile.TemporaryDirectory(prefix="tts-build-lm-")
        lm_path: Optional[str] = None
        if opts.process.check and opts.process.check_lm == "script":
            lm_path = str(Path(lm_dir.name) / "script.arpa")
            script_language_model((x.text for x in self.manifest.lines() if isinstance(x, ManifestLine)), lm_path)
        with lm_dir, ProcessPoolExecutor(max_workers=opts.pool_size, initializer=warm_up,
                                         initargs=(lm_path,)) as pool:
            lines = (item for item in self.manifest.lines() if isinstance(item, ManifestLine))
            exhausted = False
            while True:
                # Fill: synthesis in flight and post-processing queued stay bounded.
                while not exhausted and len(synth) < opts.max_in_flight and len(post) < 2 * opts.pool_size + 2:
                    line = next(lines, None)
                    if line is None:
                        exhausted = True
                        break
                    ids_in_manifest.add(line.line_id)
                    name = self.names.relative(line)
                    rec = lock.get(line.line_id)
                    if line.line_id in opts.pick:
                        self._pick(lock, rec, line, name, opts.pick[line.line_id])
                        rec = lock.get(line.line_id)
                    take = line.take or (int(rec.get("take", 1)) if rec else 1)
                    key = self._key(dataclasses.replace(line, take=take), name)
                    audio = self._paths(name)[0]
                    if line.line_id in opts.retake and rec is not None and audio.exists():
                        self._keep_take(name, int(rec.get("take", 1)))
                        take = int(rec.get("take", 1)) + 1
                        key = self._key(dataclasses.replace(line, take=take), name)
                    elif self._is_current(rec, key, audio):
                        assert rec is not None
                        report.add_kept(rec)
                        self.on_progress(report.done, total)
                        continue
                    base_seed = line.seed if line.seed is not None else 0
                    if rec is not None and rec.get("key") == key and rec.get("status") == "failed":
                        base_seed = int(rec.get("seed", base_seed)) + 1  # a failed line tries fresh seeds
                    submit(_Line(line, key, name, take, base_seed))
                if not synth and not post:
                    break
                done, _ = wait([*synth, *post], return_when=FIRST_COMPLETED)
                for future in done:
                    if future in synth:
                        work = synth.pop(future)
                        try:
                            result = future.result()
                        except TtsClientError as exc:
                            settle(work, {}, "failed", f"synthesis: {exc}")
                            self.on_progress(report.done, total)
                            continue
                        # the engine's own time on the worker (waiting in the queue is not a cost of the line)
                        work.synth_s = result.meta.gen_time_ms / 1000
                        work.worker = result.meta.worker_id
                        work.cached = bool(getattr(result.meta, "cached", False))
                        audio, timings, vtt = self._paths(work.name)
                        task = LineTask(work.line.line_id, work.line.text, result.pcm, result.sample_rate,
                                        result.channels, str(audio), str(timings), str(vtt), opts.process)
                        post[pool.submit(finish_line, task)] = work
                    else:
                        work = post.pop(future)
                        try:
                            outcome = future.result()
                        except Exception as exc:  # a pool task that raised: the line fails, the build goes on
                            settle(work, {}, "failed", f"post-processing: {type(exc).__name__}: {exc}")
                            self.on_progress(report.done, total)
                            continue
                        if outcome["problems"] and work.attempt <= opts.retries:
                            work.seed += 1
                            submit(work)
                            continue
                        status = "failed" if outcome["problems"] else "built"
                        settle(work, outcome, status, "; ".join(outcome["problems"]))
                        self.on_progress(report.done, total)
        if opts.prune:
            report.pruned = self._prune(lock, ids_in_manifest)
        lock.compact()
        report.elapsed_s = time.perf_counter() - started
        write_reports(report, self.manifest, lock)
        return report

    # ---- takes and pruning ---------------------------------------------------------------------------

    def _take_path(self, name: str, take: int, suffix: str) -> Path:
        return inside(self.root, f"{TAKES_DIR}/{name}.take{take}{suffix}")

    def _keep_take(self, name: str, take: int) -> None:
        """Copy the line's current files to _takes/ as take N, before a new take replaces them."""
        for src, suffix in zip(self._paths(name), (f".{self.options.process.fmt}", ".words.json", ".vtt"), strict=True):
            if src.exists():
                dst = self._take_path(name, take, suffix)
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)

    def _pick(self, lock: LockFile, rec: Optional[dict[str, Any]], line: ManifestLine, name: str, take: int) -> None:
        """Make take N the line's file again; the other takes' files are then removed."""
        line_id = line.line_id
        if rec is None:
            raise BuildSetupError(f"--pick {line_id}={take}: line {line_id!r} has not been built")
        current = int(rec.get("take", 1))
        suffixes = (f".{self.options.process.fmt}", ".words.json", ".vtt")
        if take != current:
            if not self._take_path(name, take, suffixes[0]).exists():
                raise BuildSetupError(f"--pick {line_id}={take}: no such take (current take is {current})")
            for dst, suffix in zip(self._paths(name), suffixes, strict=True):
                src = self._take_path(name, take, suffix)
                if src.exists():
                    shutil.copy2(src, dst)
            audio = self._paths(name)[0]
            rec = {**rec, "take": take, "file_sha256": file_sha256(audio), "picked": True, "status": "built",
                   "key": self._key(dataclasses.replace(line, take=take), name)}
            lock.record(rec)
        for n in range(1, max(take, current) + 1):
            for suffix in suffixes:
                self._take_path(name, n, suffix).unlink(missing_ok=True)

    def _prune(self, lock: LockFile, keep: set[str]) -> int:
        removed = 0
        for rec in list(lock):
            if rec["id"] in keep:
                continue
            for rel in (rec.get("file"), rec.get("timings"), rec.get("vtt")):
                if rel:
                    try:
                        inside(self.root, rel).unlink(missing_ok=True)
                    except ValueError:
                        continue
            lock.forget(rec["id"])
            removed += 1
        return removed
