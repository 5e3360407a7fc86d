"""Protocol constants: headers, command bytes, priorities and default endpoints."""

from __future__ import annotations

import enum

PROTOCOL_VERSION = 2
CLIENT_HEADER = b"TTSC2"
WORKER_HEADER = b"TTSW2"

DEFAULT_FRONTEND = "tcp://127.0.0.1:5555"
DEFAULT_BACKEND = "tcp://127.0.0.1:5556"

SAMPLE_FORMAT = "s16le"
BYTES_PER_SAMPLE = 2


class Side(enum.Enum):
    """Which pair of peers a message travels between."""

    CLIENT = CLIENT_HEADER
    WORKER = WORKER_HEADER


class Command(enum.IntEnum):
    """One-byte command codes; the high nibble tells the direction."""

    # client -> broker
    SUBMIT = 0x01
    CANCEL = 0x02
    JOB_STATUS = 0x03
    BROKER_STATUS = 0x04
    PING = 0x05
    RELOAD = 0x06
    JOBS = 0x07
    RETRY = 0x08
    DRAIN_WORKER = 0x09
    PAUSE_MODEL = 0x0A
    RESUME_MODEL = 0x0B
    GET_RESULT = 0x0C
    # broker -> client
    ACCEPTED = 0x11
    PARTIAL = 0x12
    RESULT = 0x13
    ERROR = 0x14
    JOB_STATUS_REPLY = 0x15
    BROKER_STATUS_REPLY = 0x16
    PONG = 0x17
    RELOAD_REPLY = 0x18
    JOBS_REPLY = 0x19
    ADMIN_REPLY = 0x1A
    RESULT_REPLY = 0x1C
    # worker -> broker
    W_READY = 0x21
    W_HEARTBEAT = 0x22
    W_PARTIAL = 0x23
    W_RESULT = 0x24
    W_FAIL = 0x25
    W_DISCONNECT = 0x26
    # broker -> worker
    B_JOB = 0x31
    B_CANCEL = 0x32
    B_HEARTBEAT = 0x33
    B_DISCONNECT = 0x34
    B_RELOAD = 0x35

    @property
    def side(self) -> Side:
        return Side.CLIENT if self.value < 0x20 else Side.WORKER

    @property
    def to_broker(self) -> bool:
        return self.value >> 4 in (0x0, 0x2)


PAYLOAD_COMMANDS = frozenset(
    {Command.PARTIAL, Command.RESULT, Command.RESULT_REPLY, Command.W_PARTIAL, Command.W_RESULT}
)


class Priority(str, enum.Enum):
    """Dispatch priority levels, highest first."""

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def rank(self) -> int:
        return _PRIORITY_RANK[self]


_PRIORITY_RANK = {Priority.HIGH: 0, Priority.NORMAL: 1, Priority.LOW: 2}


class JobState(str, enum.Enum):
    """Life cycle of a job as the broker reports it."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)
