"""tts-worker: a model-resident speech synthesis worker for the tts-broker broker.

`python -m tts_worker --broker tcp://HOST:5556 --engine piper --concurrency 2` starts a supervisor with two
worker processes; each loads its engine once and serves jobs over TTSP/2 (protocol/PROTOCOL.md).
"""

from __future__ import annotations

from tts_protocol import __version__ as __version__  # the one version, in tts_protocol
