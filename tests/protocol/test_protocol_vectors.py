"""The golden vectors in protocol/vectors/ decode to their bodies and re-encode to the same bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tts_protocol import Command, ProtocolError, Side, body_for, decode, encode, output_filename

pytestmark = pytest.mark.unit

VECTORS = Path(__file__).resolve().parents[2] / "protocol" / "vectors"
MANIFEST = json.loads((VECTORS / "manifest.json").read_text(encoding="utf-8"))


def _frames(entry: dict) -> list[bytes]:
    return [(VECTORS / name).read_bytes() for name in entry["frames"]]


@pytest.mark.parametrize("entry", [e for e in MANIFEST if e["valid"]], ids=lambda e: e["name"])
def test_valid_vector_round_trips(entry: dict) -> None:
    frames = _frames(entry)
    side = Side(entry["side"].encode())
    message = decode(frames, side=side, to_broker=entry["to_broker"])
    assert message.command == Command(entry["command_byte"])
    assert message.body.to_wire() == entry["body"]
    assert encode(message.command, body_for(message.command, entry["body"]), message.payload) == frames


@pytest.mark.parametrize("entry", [e for e in MANIFEST if not e["valid"]], ids=lambda e: e["name"])
def test_invalid_vector_is_rejected(entry: dict) -> None:
    with pytest.raises(ProtocolError):
        decode(_frames(entry), side=Side(entry["side"].encode()), to_broker=entry["to_broker"])


def test_every_command_has_a_vector() -> None:
    covered = {e["command"] for e in MANIFEST if e["valid"]}
    assert covered == {c.name for c in Command}


@pytest.mark.parametrize("case", json.loads((VECTORS / "filenames.json").read_text(encoding="utf-8")))
def test_filename_vectors(case: dict) -> None:
    assert output_filename(case["stream_index"], case["id"], case["ext"]) == case["expected"]


def test_error_codes_match_the_vectors_and_the_spec() -> None:
    """error_codes.json (made by make_vectors.py) is the list every codec knows; PROTOCOL.md documents each."""
    from tts_protocol import ErrorCode

    listed = json.loads((VECTORS / "error_codes.json").read_text(encoding="utf-8"))
    assert listed == {code.value: code.retryable for code in ErrorCode}
    assert listed["no_audio"] is False
    spec = (VECTORS.parent / "PROTOCOL.md").read_text(encoding="utf-8")
    for code, retryable in listed.items():
        assert f"| `{code}` | {str(retryable).lower()} |" in spec, code
