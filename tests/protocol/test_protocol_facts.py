"""Facts the protocol states in more than one form, checked against their one home in tts_protocol.

The retryable error codes live in tts_protocol.errors.RETRYABLE_CODES; PROTOCOL.md's error table and
protocol/retry_policy.json (which the Node client's tests read) must say the same.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tts_protocol import ErrorCode
from tts_protocol.errors import RETRYABLE_CODES

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

PROTOCOL_DIR = Path(__file__).resolve().parents[2] / "protocol"
ROW = re.compile(r"^\| `([a-z_]+)` \| (true|false) \|", re.MULTILINE)


def test_protocol_md_error_table_matches_the_codes() -> None:
    text = (PROTOCOL_DIR / "PROTOCOL.md").read_text()
    section = text[text.index("Error codes (`code`, `retryable`)"):]
    rows = dict(ROW.findall(section[: section.index("\n\n", section.index("|"))]))
    assert rows == {code.value: str(code.retryable).lower() for code in ErrorCode}


def test_retry_policy_json_lists_the_retryable_codes() -> None:
    policy = json.loads((PROTOCOL_DIR / "retry_policy.json").read_text())
    assert policy["retryable_codes"] == sorted(code.value for code in RETRYABLE_CODES)
    assert {code for code in ErrorCode if code.retryable} == RETRYABLE_CODES


def test_error_code_parse() -> None:
    assert ErrorCode.parse("queue_full") is ErrorCode.QUEUE_FULL
    assert ErrorCode.parse(ErrorCode.INTERNAL) is ErrorCode.INTERNAL
    assert ErrorCode.parse("gpu_on_fire") is ErrorCode.ENGINE_ERROR  # a plugin's own code
    assert ErrorCode.parse(7) is ErrorCode.ENGINE_ERROR
    assert ErrorCode.parse("nope", ErrorCode.INTERNAL) is ErrorCode.INTERNAL
