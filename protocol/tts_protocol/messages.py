"""Message bodies: one validated, frozen model per command (PROTOCOL.md sections 3, 4 and 6).

Field order here is the key order on the wire. Unknown keys are ignored so newer peers can add fields;
wrong types are rejected (strict mode), so a peer never gets "1" where it expects 1.
"""

from __future__ import annotations

from typing import Annotated, Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from tts_protocol.constants import SAMPLE_FORMAT, Command, JobState, Priority

JOB_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
MAX_TEXT_CHARS = 1_000_000  # hard protocol ceiling; the broker's max_text_chars is usually far lower

JobId = Annotated[str, StringConstraints(pattern=JOB_ID_PATTERN)]
ShortStr = Annotated[str, StringConstraints(max_length=256)]
ReqId = Annotated[str, StringConstraints(min_length=1, max_length=128)]
VoiceValue = Union[None, bool, int, float, Annotated[str, StringConstraints(max_length=4096)]]
VoiceSettings = Annotated[dict[Annotated[str, StringConstraints(max_length=64)], VoiceValue], Field(max_length=64)]
NonNegInt = Annotated[int, Field(ge=0)]


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
    speaker: Optional[ShortStr] = None
    model: Optional[ShortStr] = None
    priority: Priority = Field(default=Priority.NORMAL, strict=False)
    deadline_ms: NonNegInt = 0
    timeout_ms: NonNegInt = 0
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


class Request(Body):
    """A request that carries only a correlation id (BROKER_STATUS, PING)."""

    req_id: ReqId


class Reload(Body):
    req_id: ReqId
    model: Optional[ShortStr] = None
    options: VoiceSettings = Field(default_factory=dict)


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
    attempt: Annotated[int, Field(ge=1)]
    seq: NonNegInt
    sample_rate: Annotated[int, Field(gt=0, le=384_000)]
    channels: Annotated[int, Field(ge=1, le=8)] = 1
    sample_format: Annotated[str, StringConstraints(pattern=f"^{SAMPLE_FORMAT}$")] = SAMPLE_FORMAT


class Result(Body):
    job_id: JobId
    attempt: Annotated[int, Field(ge=1)]
    worker_id: ShortStr
    engine: ShortStr
    model: ShortStr
    sample_rate: Annotated[int, Field(gt=0, le=384_000)]
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
    queue: dict[str, Any] = Field(default_factory=dict)
    jobs: dict[str, Any] = Field(default_factory=dict)
    workers: list[WorkerView] = Field(default_factory=list)
    paused: list[str] = Field(default_factory=list)


class BrokerStatusReply(Body):
    req_id: ReqId
    status: StatusView


class Pong(Body):
    req_id: ReqId
    broker_id: ShortStr
    time_ms: NonNegInt


class ReloadReply(Body):
    req_id: ReqId
    workers: NonNegInt


class AdminReply(Body):
    """The answer to DRAIN_WORKER, PAUSE_MODEL and RESUME_MODEL: what it applied to, and the paused keys now."""

    req_id: ReqId
    workers: list[ShortStr] = Field(default_factory=list, max_length=4096)
    paused: list[ShortStr] = Field(default_factory=list, max_length=4096)


# ---- worker -> broker ------------------------------------------------------------------------------


class Ready(Body):
    worker_id: ShortStr
    name: ShortStr = ""
    host: ShortStr = ""
    pid: NonNegInt = 0
    engine: ShortStr
    model: ShortStr = ""
    capacity: Annotated[int, Field(ge=1, le=1024)] = 1
    device: ShortStr = "cpu"
    sample_rate: NonNegInt = 0
    licence: ShortStr = ""
    load_time_ms: NonNegInt = 0


class Heartbeat(Body):
    stats: dict[ShortStr, Any] = Field(default_factory=dict, max_length=64)


class WorkerResult(Body):
    job_id: JobId
    attempt: Annotated[int, Field(ge=1)]
    sample_rate: Annotated[int, Field(gt=0, le=384_000)]
    channels: Annotated[int, Field(ge=1, le=8)] = 1
    sample_format: Annotated[str, StringConstraints(pattern=f"^{SAMPLE_FORMAT}$")] = SAMPLE_FORMAT
    gen_time_ms: NonNegInt = 0
    deterministic: bool = False


class Fail(Body):
    job_id: JobId
    attempt: Annotated[int, Field(ge=1)]
    code: ShortStr
    message: Annotated[str, StringConstraints(max_length=4096)] = ""
    retryable: bool = False


class Disconnect(Body):
    reason: Annotated[str, StringConstraints(max_length=1024)] = ""


# ---- broker -> worker ------------------------------------------------------------------------------


class Job(Body):
    job_id: JobId
    attempt: Annotated[int, Field(ge=1)]
    text: Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT_CHARS)]
    speaker: Optional[ShortStr] = None
    model: Optional[ShortStr] = None
    voice: VoiceSettings = Field(default_factory=dict)
    stream: bool = False
    timeout_ms: NonNegInt = 0


class CancelLease(Body):
    job_id: JobId
    attempt: Annotated[int, Field(ge=1)]
    reason: Annotated[str, StringConstraints(max_length=1024)] = ""


class WorkerReload(Body):
    options: VoiceSettings = Field(default_factory=dict)


BODY_TYPES: dict[Command, type[Body]] = {
    Command.SUBMIT: Submit,
    Command.CANCEL: CancelJob,
    Command.JOB_STATUS: JobStatusRequest,
    Command.BROKER_STATUS: Request,
    Command.PING: Request,
    Command.RELOAD: Reload,
    Command.JOBS: JobsRequest,
    Command.RETRY: RetryJob,
    Command.DRAIN_WORKER: DrainWorker,
    Command.PAUSE_MODEL: ModelRequest,
    Command.RESUME_MODEL: ModelRequest,
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
    Command.W_READY: Ready,
    Command.W_HEARTBEAT: Heartbeat,
    Command.W_PARTIAL: Partial,
    Command.W_RESULT: WorkerResult,
    Command.W_FAIL: Fail,
    Command.W_DISCONNECT: Disconnect,
    Command.B_JOB: Job,
    Command.B_CANCEL: CancelLease,
    Command.B_HEARTBEAT: Empty,
    Command.B_DISCONNECT: Disconnect,
    Command.B_RELOAD: WorkerReload,
}
