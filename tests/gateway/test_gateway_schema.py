"""Property-based HTTP testing of the gateway against its own OpenAPI schema (schemathesis on hypothesis).

Valid and invalid requests generated from the schema go to a real gateway in front of a real broker and tone
worker; no answer may be a server error, and every answer must match what the schema documents (status code,
content type, body schema). The example count is bounded so the run stays well under a minute.
"""

from __future__ import annotations

from typing import Any, Callable

import httpx
import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from gatewaykit import API_KEY, GatewayProc
from harness import BrokerProc, Proc

pytestmark = pytest.mark.timeout(180)

EXAMPLES = {GenerationMode.POSITIVE: 120, GenerationMode.NEGATIVE: 80}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def test_generated_requests_never_get_a_server_error(broker: BrokerProc, tone_workers: Callable[..., Proc],
                                                     gateway_factory: Callable[..., GatewayProc]) -> None:
    tone_workers(broker, n=2)
    gateway = gateway_factory(broker, models="tts-1=tone,tts-1-hd=tone", max_input_chars=300)
    schema = schemathesis.openapi.from_url(f"{gateway.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {"POST /v1/audio/speech", "GET /v1/models", "GET /v1/audio/voices",
                                               "GET /health"}
    seen: dict[str, dict[int, int]] = {}
    for operation in operations:
        for mode, examples in EXAMPLES.items():
            exercise(operation, mode, examples, gateway.url, seen.setdefault(operation.label, {}))
    assert httpx.get(f"{gateway.url}/health", timeout=30).status_code == 200  # still serving afterwards
    speech = seen["POST /v1/audio/speech"]
    assert speech.get(200, 0) > 0 and speech.get(400, 0) > 0, speech  # both audio and refusals were exercised
    assert all(code < 500 for counts in seen.values() for code in counts), seen
    assert "Traceback" not in gateway.proc.log()


def exercise(operation: Any, mode: GenerationMode, examples: int, base_url: str, counts: dict[int, int]) -> None:
    """Up to `examples` generated requests to one operation; counts their status codes."""

    @given(case=operation.as_strategy(mode))
    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def check(case: Any) -> None:
        response = case.call(base_url=base_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60)
        counts[response.status_code] = counts.get(response.status_code, 0) + 1
        case.validate_response(response, checks=CHECKS)

    try:
        check()
    except hypothesis.errors.Unsatisfiable:
        assert mode is GenerationMode.NEGATIVE  # an operation without inputs has no invalid form
