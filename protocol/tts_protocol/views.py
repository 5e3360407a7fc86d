"""Views as JSON documents for people and scripts: `tts status --json` and the broker's /api/status.

Both print the same document for the same state, so the shaping lives here, next to the StatusView model,
rather than in the client's CLI or the broker's HTTP server.
"""

from __future__ import annotations

from typing import Any

from tts_protocol.messages import StatusView


def status_document(view: StatusView) -> dict[str, Any]:
    """The status view as JSON: the wire view plus `workers[].id` and `queue_depth`, the short names scripts use."""
    data = view.to_wire()
    for worker in data["workers"]:
        worker["id"] = worker["worker_id"]
    data["queue_depth"] = data["queue"].get("depth", 0)
    return data
