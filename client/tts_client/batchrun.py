"""`tts batch`'s run: one job per input line under an id derived from the line, resumable and cancellable.

A line's job id is `b-{file}-{stream_index}-{id}-{digest}` where the digest covers the input file's path, the
line's stream index, id and content (text, speaker, voice, model): the same line in the same file gets the same
id on every run, so the broker's idempotency (PROTOCOL.md section 3) attaches a rerun to the job it still holds,
`tts jobs` shows which line a job is, and a line whose file is already written is skipped unless overwrite.
Ctrl-C cancels every job of this run the broker may still hold; the lines not yet submitted never are.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from concurrent.futures import FIRST_COMPLETED, Future, wait
from pathlib import Path
from typing import Any, Callable, Optional

from tts_protocol import safe_name_part

from tts_client.audio import line_output_path, save_line
from tts_client.batchfile import BatchLine
from tts_client.client import JobHandle, TtsClient
from tts_client.errors import BrokerUnavailable, JobCancelled, TtsClientError

_CANCEL_CONFIRM_S = 5.0
"""After Ctrl-C: how long to wait for the broker to confirm (one ping round trip) it got the CANCELs."""


@dataclasses.dataclass(frozen=True, slots=True)
class BatchDefaults:
    """What a line leaves out: speaker and voice settings (a line's own win), model and priority for all."""

    speaker: Optional[str] = None
    voice: dict[str, Any] = dataclasses.field(default_factory=dict)
    model: Optional[str] = None
    priority: str = "normal"


@dataclasses.dataclass(slots=True)
class BatchOutcome:
    """What a run did: written, skipped (already written), failed lines; whether it was interrupted."""

    written: int = 0
    skipped: int = 0
    failures: list[tuple[BatchLine, BaseException]] = dataclasses.field(default_factory=list)
    not_run: int = 0
    cancelled: int = 0
    interrupted: bool = False
    broker_lost: bool = False


def batch_job_id(source: str, line: BatchLine, defaults: BatchDefaults) -> str:
    """The line's job id: readable parts (file stem, stream index, line id) and a digest of where the line
    comes from and what it asks for. Stays within the protocol's 128 characters of [A-Za-z0-9._:-]."""
    speaker, voice = _line_request(line, defaults)
    identity = json.dumps([os.path.abspath(source) if source != "<stdin>" else source, line.stream_index,
                           line.line_id, line.text, speaker, voice, defaults.model], sort_keys=True,
                          ensure_ascii=False)
    digest = hashlib.sha256(identity.encode("utf-8")).hexdigest()[:16]
    stem = safe_name_part(Path(source).stem)[:24]
    return f"b-{stem}-{safe_name_part(line.stream_index)[:16]}-{safe_name_part(line.line_id)[:48]}-{digest}"


def _line_request(line: BatchLine, defaults: BatchDefaults) -> tuple[Optional[str], dict[str, Any]]:
    speaker = line.speaker if line.speaker is not None else defaults.speaker
    return speaker, {**defaults.voice, **line.voice}


def run_batch(client: TtsClient, source: str, lines: list[BatchLine], directory: Path, fmt: str,
              defaults: BatchDefaults, *, max_in_flight: int, overwrite: bool,
              progress: Callable[[int], None]) -> BatchOutcome:
    """Synthesise `lines` into `directory`, at most max_in_flight jobs at once. KeyboardInterrupt is caught:
    the run's unfinished jobs are cancelled at the broker and the outcome says interrupted."""
    outcome = BatchOutcome()
    todo: list[BatchLine] = []
    for line in lines:
        if not overwrite and line_output_path(directory, line.stream_index, line.line_id, fmt).exists():
            outcome.skipped += 1
            progress(1)
        else:
            todo.append(line)
    in_flight: dict[Future, tuple[BatchLine, JobHandle]] = {}
    retried: set[str] = set()
    pending = iter(todo)
    submitted = 0

    def submit(line: BatchLine) -> None:
        speaker, voice = _line_request(line, defaults)
        handle = client.submit(line.text, job_id=batch_job_id(source, line, defaults), speaker=speaker,
                               model=defaults.model, voice=voice, priority=defaults.priority)
        in_flight[handle.future] = (line, handle)

    try:
        while True:
            while not outcome.broker_lost and len(in_flight) < max_in_flight:
                upcoming = next(pending, None)
                if upcoming is None:
                    break
                submit(upcoming)
                submitted += 1
            if not in_flight:
                break
            done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
            for future in done:
                line, handle = in_flight.pop(future)
                try:
                    save_line(handle.result(), directory, line.stream_index, line.line_id, fmt)
                    outcome.written += 1
                except JobCancelled as exc:
                    if handle.job_id in retried:
                        outcome.failures.append((line, exc))
                    else:
                        # An earlier run's Ctrl-C cancelled this line's job, which the broker still holds under
                        # the same id: queue it again (RETRY) and attach to it.
                        retried.add(handle.job_id)
                        try:
                            client.retry(handle.job_id)
                        except TtsClientError as retry_exc:
                            outcome.failures.append((line, retry_exc))
                            progress(1)
                            continue
                        submit(line)
                        continue
                except BrokerUnavailable as exc:
                    outcome.broker_lost = True  # submit nothing more: each new job would wait its own timeout
                    outcome.failures.append((line, exc))
                except Exception as exc:
                    outcome.failures.append((line, exc))
                progress(1)
    except KeyboardInterrupt:
        outcome.interrupted = True
        outcome.cancelled = _cancel_all(client, [handle for _line, handle in in_flight.values()])
    outcome.not_run = len(todo) - submitted
    return outcome


def _cancel_all(client: TtsClient, handles: list[JobHandle]) -> int:
    """CANCEL every unfinished job, then one PING: its PONG comes after the broker has read the CANCELs
    (one connection keeps order), so closing the client right after loses none of them."""
    unfinished = [h for h in handles if not h.done()]
    for handle in unfinished:
        handle.cancel()
    try:
        client.ping(timeout_s=_CANCEL_CONFIRM_S)
    except TtsClientError:
        pass  # the broker is gone: nothing of this run is left running there
    return len(unfinished)
