"""One JSON object per log line (`--log-json` of tts-broker and tts-worker), with the job and worker ids.

Log calls name ids in their message ("job %s ...", "worker %s ...") and, on the main transitions, also pass
them as `extra={"job_id": ..., "worker_id": ...}`; the formatter takes the extras first and otherwise finds
the ids in the message, so every line that mentions a job or a worker carries it as a field.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

_JOB = re.compile(r"\bjob (\S+?)[:,;)]?(?:\s|$)")
_WORKER = re.compile(r"\bworker (w-[0-9A-Za-z._:-]+|\S+?)[:,;)]?(?:\s|$)")
_WORKER_TAG = re.compile(r"^\[(?:[^\]]* )?(w-[0-9a-f]{16})\]")  # tts-worker lines start "[NAME w-...]"
_WORKER_ID = re.compile(r"\b(w-[0-9a-f]{16})\b")  # the routing ids workers choose, anywhere in a line
_IDS = ("job_id", "worker_id", "attempt", "broker_id")


class JsonFormatter(logging.Formatter):
    """Format records as `{"ts", "level", "logger", "msg", "job_id"?, "worker_id"?, ...}` on one line."""

    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "component": self.component,
            "logger": record.name,
            "msg": message,
        }
        for key in _IDS:
            value = getattr(record, key, None)
            if value is not None:
                doc[key] = value
        if "job_id" not in doc and (m := _JOB.search(message)):
            doc["job_id"] = m.group(1)
        if "worker_id" not in doc and (m := _WORKER_TAG.match(message) or _WORKER_ID.search(message)
                                       or _WORKER.search(message)):
            doc["worker_id"] = m.group(1)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


def configure_logging(level: str, *, json_lines: bool, component: str) -> None:
    """Set up the root logger of an entry point: human lines, or JSON lines with `json_lines`."""
    handler = logging.StreamHandler()
    if json_lines:
        handler.setFormatter(JsonFormatter(component))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
