"""Message bodies: one validated, frozen model per command (PROTOCOL.md sections 3, 4 and 6).

Field order here is the key order on the wire. Unknown keys are ignored so newer peers can add fields;
wrong types are rejected (strict mode), so a peer never gets "1" where it expects 1.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from tts_protocol import routing
from tts_protocol.constants import SAMPLE_FORMAT, Command, JobState, Priority

# ---- limits (PROTOCOL.md section 3, "Limits"): every number and size a peer sends has a ceiling ----------
JOB_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
MAX_TEXT_CHARS = 1_000_000  # hard protocol ceiling; the broker's max_text_chars is usually far lower
MAX_DURATION_MS = 7 * 24 * 3600 * 1000  # deadline_ms / timeout_ms: 7 days
MAX_COUNT = 2**53 - 1  # counters, sizes and times in ms: exact in a JavaScript number
MAX_ATTEMPT = 2**31 - 1  # attempt numbers and PARTIAL seq
MAX_SAMPLE_RATE = 384_000
MAX_CAPACITY = 1024  # READY capacity ceiling; the broker's max_worker_capacity is usually far lower
MAX_STATS_DEPTH = 5  # HEARTBEAT stats: nested maps/lists below `stats`
MAX_STATS_ITEMS = 256  # entries of one map or list in the stats
MAX_STATS_NODES = 10_000  # values in the whole stats tree
MAX_STATS_STR = 1024
_NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"  # names end up in log lines: no line breaks, escapes or NULs

JobId = Annotated[str, StringConstraints(pattern=JOB_ID_PATTERN)]
ShortStr = Annotated[str, StringConstraints(max_length=256)]
Name = Annotated[str, StringConstraints(max_length=256, pattern=_NO_CONTROL)]  # printable: logged as is
ReqId = Annotated[str, StringConstraints(min_length=1, max_length=128)]
VoiceValue = Union[None, bool, int, float, Annotated[str, StringConstraints(max_length=4096)]]
VoiceSettings = Annotated[dict[Annotated[str, StringConstraints(max_length=64)], VoiceValue], Field(max_length=64)]
NonNegInt = Annotated[int, Field(ge=0, le=MAX_COUNT)]
DurationMs = Annotated[int, Field(ge=0, le=MAX_DURATION_MS)]
Attempt = Annotated[int, Field(ge=1, le=MAX_ATTEMPT)]
SampleRate = Annotated[int, Field(gt=0, le=MAX_SAMPLE_RATE)]


def _check_stats(stats: dict[str, Any]) -> dict[str, Any]:
    """HEARTBEAT stats stay small plain data: str keys, scalars, bounded lists and maps, no bytes."""
    nodes = 0
    stack: list[tuple[Any, int]] = [(stats, 0)]
    while stack:
        value, depth = stack.pop()
        nodes += 1
        if nodes > MAX_STATS_NODES:
            raise ValueError(f"more than {MAX_STATS_NODES} values")
        if value is None or isinstance(value, (bool, float)):
            continue
        if isinstance(value, int):
            if not -(2**63) <= value < 2**64:
                raise ValueError("integer out of range")
            continue
        if isinstance(value, str):
            if len(value) > MAX_STATS_STR:
                raise ValueError(f"string longer than {MAX_STATS_STR} characters")
            continue
        if not isinstance(value, (dict, list)):
            raise ValueError(f"{type(value).__name__} values are not allowed (str, numbers, lists, maps)")
        if depth >= MAX_STATS_DEPTH:
            raise ValueError(f"nested deeper than {MAX_STATS_DEPTH}")
        if len(value) > MAX_STATS_ITEMS:
            raise ValueError(f"a map or list with more than {MAX_STATS_ITEMS} entries")
        if isinstance(value, dict):
            for key in value:
                if not isinstance(key, str) or len(key) > 256:
                    raise ValueError("keys must be str of at most 256 characters")
            stack.extend((v, depth + 1) for v in value.values())
        else:
            stack.extend((v, depth + 1) for v in value)
    return stats
MAX_RELOAD_WAIT_MS = 3_600_000


class Body(BaseModel):
    """Base of all bodies: frozen, strict, ignores unknown keys."""

    model_config = ConfigDict(frozen=True, strict=True, extra="ignore", use_enum_values=False)

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class Empty(Body):
    pass


# ---- client -> broker ------------------------------------------------------------------------------


class Submit(Body):
    job_id: JobId
    text: Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT_CHARS)]
    speaker: Optional[Name] = None
    model: Optional[Name] = None
    priority: Priority = Field(default=Priority.NORMAL, strict=False)
    deadline_ms: DurationMs = 0
    timeout_ms: DurationMs = 0
    stream: bool = False
    voice: VoiceSettings = Field(default_factory=dict)
    cache: Optional[bool] = None


class CancelJob(Body):
    job_id: JobId


class JobStatusRequest(Body):
    req_id: ReqId
    job_id: JobId


class JobsRequest(Body):
    req_id: ReqId
    state: Optional[JobState] = Field(default=None, strict=False)
    limit: Annotated[int, Field(ge=1, le=10_000)] = 50


class RetryJob(Body):
    req_id: ReqId
    job_id: JobId


class GetResult(Body):
    req_id: ReqId
    job_id: JobId


class Request(Body):
    """A request that carries only a correlation id (BROKER_STATUS, PING)."""

    req_id: ReqId


class StatusRequest(Body):
    """BROKER_STATUS: one page of the worker list (the counts and the per-key summary are always whole)."""

    req_id: ReqId
    workers_offset: Annotated[int, Field(ge=0, le=2**31)] = 0
    workers_limit: Optional[Annotated[int, Field(ge=0, le=10_000)]] = None  # nil: as many as the reply holds
    worker_prefix: Optional[Name] = None  # only workers whose name starts with this (a supervisor's own)


class Reload(Body):
    req_id: ReqId
    model: Optional[Name] = None
    options: VoiceSettings = Field(default_factory=dict)
    #: > 0: reply once every told worker is back (READY) or after this many seconds, with each one's outcome
    wait_ms: Annotated[int, Field(ge=0, le=MAX_RELOAD_WAIT_MS)] = 0


class DrainWorker(Body):
    """Stop leasing jobs to one worker (by worker_id or name) or to every worker of a host; they finish
    their jobs and are then told to DISCONNECT."""

    req_id: ReqId
    worker: Optional[ShortStr] = None
    host: Optional[ShortStr] = None


class ModelRequest(Body):
    """PAUSE_MODEL / RESUME_MODEL: a routing key as jobs name it (ENGINE or ENGINE:MODEL)."""

    req_id: ReqId
    model: Annotated[str, StringConstraints(min_length=1, max_length=256)]


# ---- broker -> client ------------------------------------------------------------------------------


class Accepted(Body):
    job_id: JobId
    state: JobState = Field(strict=False)
    queue_depth: NonNegInt
    duplicate: bool = False


class Partial(Body):
    job_id: JobId
    attempt: Attempt
    seq: Annotated[int, Field(ge=0, le=MAX_ATTEMPT)]
    sample_rate: SampleRate
    channels: Annotated[int, Field(ge=1, le=8)] = 1
    sample_format: Annotated[str, StringConstraints(pattern=f"^{SAMPLE_FORMAT}$")] = SAMPLE_FORMAT


class Result(Body):
    job_id: JobId
    attempt: Attempt
    worker_id: ShortStr
    engine: ShortStr
    model: ShortStr
    sample_rate: SampleRate
    channels: Annotated[int, Field(ge=1, le=8)] = 1
    sample_format: Annotated[str, StringConstraints(pattern=f"^{SAMPLE_FORMAT}$")] = SAMPLE_FORMAT
    num_samples: NonNegInt = 0
    gen_time_ms: NonNegInt = 0
    queue_time_ms: NonNegInt = 0
    total_time_ms: NonNegInt = 0
    cached: bool = False


class Error(Body):
    job_id: Optional[ShortStr] = None
    req_id: Optional[ShortStr] = None
    code: ShortStr
    message: Annotated[str, StringConstraints(max_length=4096)] = ""
    retryable: bool = False


class ErrorInfo(Body):
    code: ShortStr
    message: str = ""
    retryable: bool = False


class JobView(Body):
    job_id: JobId
    state: JobState = Field(strict=False)
    attempt: NonNegInt
    priority: Priority = Field(strict=False)
    model: Optional[ShortStr] = None
    worker_id: Optional[ShortStr] = None
    queued_ms: NonNegInt = 0
    run_ms: Optional[NonNegInt] = None
    error: Optional[ErrorInfo] = None
    workers: list[ShortStr] = Field(default_factory=list, max_length=1024)
    accepted_at_ms: NonNegInt = 0
    cached: bool = False


class JobStatusReply(Body):
    req_id: ReqId
    job: JobView


class ResultReply(Body):
    """GET_RESULT's answer: the finished job's RESULT body; the audio rides in the payload frame."""

    req_id: ReqId
    result: Result


class JobsReply(Body):
    req_id: ReqId
    jobs: list[JobView] = Field(default_factory=list)


class WorkerView(Body):
    model_config = ConfigDict(frozen=True, strict=False, extra="ignore")

    worker_id: str
    name: str = ""
    host: str = ""
    pid: int = 0
    engine: str = ""
    model: str = ""
    device: str = ""
    state: str = "idle"
    capacity: int = 1
    busy: int = 0
    jobs_done: int = 0
    jobs_failed: int = 0
    mean_gen_ms: float = 0.0
    rss_bytes: int = 0
    gpu_mem_bytes: int = 0
    load_time_ms: int = 0
    last_seen_ms: int = 0
    warm: list[str] = Field(default_factory=list)
    engine_stats: dict[str, Any] = Field(default_factory=dict)
    supervisor: dict[str, Any] = Field(default_factory=dict)


class StatusView(Body):
    model_config = ConfigDict(frozen=True, strict=False, extra="ignore")

    broker_id: str
    version: str
    uptime_s: float
    draining: bool = False
    default_model: Optional[str] = None
    queue: dict[str, Any] = Field(default_factory=dict)
    jobs: dict[str, Any] = Field(default_factory=dict)
    workers: list[WorkerView] = Field(default_factory=list)
    paused: list[str] = Field(default_factory=list)
    dashboard: Optional[str] = None
    #: Every registered worker, also those not in this page of `workers`.
    worker_count: int = 0
    workers_offset: int = 0
    #: The whole fleet in a size that does not grow with it: workers, capacity, busy, idle_slots, draining,
    #: and by_key (routing key -> workers, capacity, busy; at most 256 keys, `keys_omitted` counts the rest).
    summary: dict[str, Any] = Field(default_factory=dict)

    def serving(self, routing_key: Optional[str]) -> int:
        """How many workers serve `routing_key` (nil: any), from the summary: the whole fleet, not this page."""
        by_key = self.summary.get("by_key")
        if not isinstance(by_key, dict):  # a broker without summaries: count this page
            return sum(1 for w in self.workers if routing.serves(w.engine, w.model, routing_key))
        if routing_key is None:
            return int(self.summary.get("workers", 0))
        entry = by_key.get(routing_key)
        return int(entry.get("workers", 0)) if isinstance(entry, dict) else 0


class BrokerStatusReply(Body):
    req_id: ReqId
    status: StatusView


class Pong(Body):
    req_id: ReqId
    broker_id: ShortStr
    time_ms: NonNegInt


class ReloadOutcome(Body):
    worker_id: ShortStr  # the id the worker had when it was told
    name: ShortStr = ""
    #: reloaded | failed (kept its old engine; `error` says why) | missing (not back within wait_ms)
    outcome: Literal["reloaded", "failed", "missing"]
    error: Annotated[str, StringConstraints(max_length=1024)] = ""
    new_worker_id: ShortStr = ""  # the id it registered with again (empty if missing)


class ReloadReply(Body):
    req_id: ReqId
    workers: NonNegInt  # how many workers were told
    waited: bool = False  # True when the reply waited for the workers (RELOAD wait_ms > 0)
    outcomes: list[ReloadOutcome] = Field(default_factory=list, max_length=4096)


class AdminReply(Body):
    """The answer to DRAIN_WORKER, PAUSE_MODEL and RESUME_MODEL: what it applied to, and the paused keys now."""

    req_id: ReqId
    workers: list[ShortStr] = Field(default_factory=list, max_length=4096)
    paused: list[ShortStr] = Field(default_factory=list, max_length=4096)


# ---- worker -> broker ------------------------------------------------------------------------------


class LeaseRef(Body):
    """A lease a worker still holds (READY after it moved to another broker: docs/failover.md)."""

    job_id: JobId
    attempt: Attempt


class Ready(Body):
    worker_id: Name
    name: Name = ""
    host: Name = ""
    pid: Annotated[int, Field(ge=0, le=2**32)] = 0
    engine: Name
    model: Name = ""
    capacity: Annotated[int, Field(ge=1, le=MAX_CAPACITY)] = 1
    device: Name = "cpu"
    sample_rate: Annotated[int, Field(ge=0, le=MAX_SAMPLE_RATE)] = 0
    licence: ShortStr = ""
    load_time_ms: NonNegInt = 0
    reload_error: Annotated[str, StringConstraints(max_length=1024)] = ""  # the last RELOAD failed: why
    # Leases the worker still holds from a broker it lost (failover): the new active broker adopts them.
    running: Annotated[list[LeaseRef], Field(max_length=MAX_CAPACITY)] = Field(default_factory=list)


class Heartbeat(Body):
    stats: Annotated[dict[ShortStr, Any], Field(max_length=64), AfterValidator(_check_stats)] = Field(
        default_factory=dict)
    # Jobs the worker takes at once from now on (replaces READY's; 0 = none for now); None = unchanged.
    capacity: Optional[Annotated[int, Field(ge=0, le=MAX_CAPACITY)]] = None


class WorkerResult(Body):
    job_id: JobId
    attempt: Attempt
    sample_rate: SampleRate
    channels: Annotated[int, Field(ge=1, le=8)] = 1
    sample_format: Annotated[str, StringConstraints(pattern=f"^{SAMPLE_FORMAT}$")] = SAMPLE_FORMAT
    gen_time_ms: NonNegInt = 0
    deterministic: bool = False


class Fail(Body):
    job_id: JobId
    attempt: Attempt
    code: Name
    message: Annotated[str, StringConstraints(max_length=4096)] = ""
    retryable: bool = False


class Disconnect(Body):
    reason: Annotated[str, StringConstraints(max_length=1024)] = ""


# ---- broker -> worker ------------------------------------------------------------------------------


class JobAssignment(Body):
    """B_JOB: one attempt of a job leased to a worker (the broker's own Job record is tts_broker.jobs.Job)."""

    job_id: JobId
    attempt: Attempt
    text: Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT_CHARS)]
    speaker: Optional[ShortStr] = None
    model: Optional[ShortStr] = None
    voice: VoiceSettings = Field(default_factory=dict)
    stream: bool = False
    timeout_ms: DurationMs = 0


class CancelLease(Body):
    job_id: JobId
    attempt: Attempt
    reason: Annotated[str, StringConstraints(max_length=1024)] = ""


class WorkerReload(Body):
    options: VoiceSettings = Field(default_factory=dict)


BODY_TYPES: dict[Command, type[Body]] = {
    Command.SUBMIT: Submit,
    Command.CANCEL: CancelJob,
    Command.JOB_STATUS: JobStatusRequest,
    Command.BROKER_STATUS: StatusRequest,
    Command.PING: Request,
    Command.RELOAD: Reload,
    Command.JOBS: JobsRequest,
    Command.RETRY: RetryJob,
    Command.DRAIN_WORKER: DrainWorker,
    Command.PAUSE_MODEL: ModelRequest,
    Command.RESUME_MODEL: ModelRequest,
    Command.GET_RESULT: GetResult,
    Command.ACCEPTED: Accepted,
    Command.PARTIAL: Partial,
    Command.RESULT: Result,
    Command.ERROR: Error,
    Command.JOB_STATUS_REPLY: JobStatusReply,
    Command.BROKER_STATUS_REPLY: BrokerStatusReply,
    Command.PONG: Pong,
    Command.RELOAD_REPLY: ReloadReply,
    Command.JOBS_REPLY: JobsReply,
    Command.ADMIN_REPLY: AdminReply,
    Command.RESULT_REPLY: ResultReply,
    Command.W_READY: Ready,
    Command.W_HEARTBEAT: Heartbeat,
    Command.W_PARTIAL: Partial,
    Command.W_RESULT: WorkerResult,
    Command.W_FAIL: Fail,
    Command.W_DISCONNECT: Disconnect,
    Command.B_JOB: JobAssignment,
    Command.B_CANCEL: CancelLease,
    Command.B_HEARTBEAT: Empty,
    Command.B_DISCONNECT: Disconnect,
    Command.B_RELOAD: WorkerReload,
}
