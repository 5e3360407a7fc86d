"""`python -m tts_worker`: the worker CLI (supervisor, or one worker process with --single)."""

from __future__ import annotations

from tts_worker.cli import main

if __name__ == "__main__":
    main()
