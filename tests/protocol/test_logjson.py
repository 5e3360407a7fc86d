"""`--log-json` lines: one JSON object per record, with the job and worker ids as fields."""

from __future__ import annotations

import json
import logging

import pytest

from tts_protocol.logjson import JsonFormatter

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]


def line(msg: str, *args: object, **extra: object) -> dict[str, object]:
    record = logging.LogRecord("tts_broker.x", logging.INFO, __file__, 1, msg, args, None)
    for key, value in extra.items():
        setattr(record, key, value)
    return json.loads(JsonFormatter("broker").format(record))


def test_ids_from_extras_first_then_from_the_message() -> None:
    doc = line("job %s done by %s (attempt %d)", "j-1", "w-0123456789abcdef", 1)
    assert doc["job_id"] == "j-1" and doc["worker_id"] == "w-0123456789abcdef"
    assert doc["msg"] == "job j-1 done by w-0123456789abcdef (attempt 1)" and doc["component"] == "broker"
    assert line("job x", job_id="y")["job_id"] == "y"
    tagged = line("[host/0 w-00112233445566ff] job abc attempt 2: leased")
    assert tagged["worker_id"] == "w-00112233445566ff" and tagged["job_id"] == "abc"
    assert line("worker w-1 ready: tone")["worker_id"] == "w-1"
    assert "job_id" not in line("restored 0 unfinished jobs") and "worker_id" not in line("no workers")


def test_odd_messages_still_give_one_json_line() -> None:
    doc = line("text with \n newline and \"quotes\" and \u00e9 and %r", b"\xff")
    assert "\n" not in JsonFormatter("w").format(logging.LogRecord("n", 10, "f", 1, "a\nb", None, None))
    assert doc["msg"].startswith("text with \n newline")
