"""Views as JSON documents for people and scripts: `tts status --json` and the broker's /api/status.

Both print the same document for the same state, so the shaping lives here, next to the StatusView model,
rather than in the client's CLI or the broker's HTTP server.
"""

from __future__ import annotations

from typing import Any

from tts_protocol.messages import StatusView


def status_document(view: StatusView) -> dict[str, Any]:
    """The status view as JSON: the wire view plus `workers[].id` and `queue_depth`, the short names scripts use,
    and the broker's leadership at the top (`role`, `epoch`, `since`; docs/failover.md)."""
    data = view.to_wire()
    for worker in data["workers"]:
        worker["id"] = worker["worker_id"]
    data["queue_depth"] = data["queue"].get("depth", 0)
    data.update(leadership(view))
    return data


def leadership(view: StatusView) -> dict[str, Any]:
    """`role` (active or standby), `epoch` (0 without a PostgreSQL journal) and `since` (unix time or None).

    The broker reports them in the `jobs` map of BROKER_STATUS, next to the journal they come from, so the
    wire view stays as it is; a broker that answers at all is the active one (a standby binds no port)."""
    jobs = view.jobs
    return {"role": str(jobs.get("role", "active")), "epoch": int(jobs.get("epoch", 0) or 0),
            "since": jobs.get("since")}
