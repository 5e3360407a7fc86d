"""A client that dialled the worker port (backend) hears so, instead of waiting on a broker that says nothing.

The backend drops what is not a worker message. A message with the client header is answered, on the same
socket and in the client's framing, with ERROR `bad_request` naming the frontend, echoing the request's req_id
or job_id so the waiting call ends with it (a `tts --broker tcp://host:5556 ...` mistake).
"""

from __future__ import annotations

from typing import Any, Optional

from tts_protocol import Command, ErrorCode, ProtocolError, Side, decode, encode
from tts_protocol.codec import RouterPort
from tts_protocol.constants import CLIENT_HEADER
from tts_protocol.messages import Error


def answer_misdirected_client(port: RouterPort, frames: list[Any], frontend: str) -> bool:
    """If `frames` (identity first) carry a client message, answer it with the ERROR above; True if answered."""
    if len(frames) < 2 or not bytes(frames[1]).startswith(CLIENT_HEADER):
        return False
    job_id: Optional[str] = None
    req_id: Optional[str] = None
    try:
        message = decode([bytes(f) for f in frames[1:]], side=Side.CLIENT, to_broker=True)
        job_id = getattr(message.body, "job_id", None)
        req_id = getattr(message.body, "req_id", None)
    except ProtocolError as exc:
        job_id, req_id = exc.job_id, exc.req_id
    error = Error(job_id=job_id if isinstance(job_id, str) else None, req_id=req_id if isinstance(req_id, str)
                  else None, code=ErrorCode.BAD_REQUEST.value, retryable=False,
                  message=f"this is the broker's worker port; clients connect to its frontend ({frontend})")
    port.send_frames(bytes(frames[0]), encode(Command.ERROR, error))
    return True
