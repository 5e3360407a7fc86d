"""Name the containers still running some seconds after their stop began (scripts/test-images.sh runs it).

A stop (`docker stop`, `docker-compose down`, a health-check restart) begins with a `kill` event carrying the
container's stop signal and ends with its `die` event. A stop that is still going `--after-s` seconds later is
what makes a `down` take 30 s instead of 2, so this prints one line naming every such container, and one line
when each of them finally stops:
    python scripts/images/stop_watch.py --after-s 10 --prefix '[test-images stop-watch]'
It follows `docker events` (DOCKER_HOST is honoured) until it is stopped or the daemon goes away.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

SIGNALS = {"2": "SIGINT", "9": "SIGKILL", "15": "SIGTERM", "3": "SIGQUIT"}


@dataclass
class Stop:
    """One container's stop in progress: when it began and with which signal."""

    name: str
    began_s: float
    signal: str
    reported: bool = False


@dataclass
class StopBook:
    """The stops in progress, fed with docker's container events; time comes in as an argument."""

    after_s: float
    stops: dict[str, Stop] = field(default_factory=dict)

    def on_event(self, event: dict[str, object], now_s: float) -> str | None:
        """Take one event; a line to print when a stop that was reported as slow has ended."""
        actor = event.get("Actor") or {}
        attributes = actor.get("Attributes", {}) if isinstance(actor, dict) else {}
        container = str(event.get("id") or (actor.get("ID") if isinstance(actor, dict) else "") or "")
        name = str(attributes.get("name") or container[:12])
        action = event.get("Action") or event.get("status")
        if action == "kill":
            number = str(attributes.get("signal", "?"))
            sent = SIGNALS.get(number, f"signal {number}")
            if container not in self.stops:
                self.stops[container] = Stop(name, now_s, sent)
            else:
                self.stops[container].signal += f" then {sent}"
        elif action in ("die", "destroy"):
            stop = self.stops.pop(container, None)
            if stop is not None and stop.reported:
                return f"{stop.name} stopped {now_s - stop.began_s:.1f} s after its stop began ({stop.signal})"
        return None

    def slow(self, now_s: float) -> str | None:
        """A line naming the containers whose stop began `after_s` ago or more and have not been named yet."""
        due = [s for s in self.stops.values() if not s.reported and now_s - s.began_s >= self.after_s]
        for stop in due:
            stop.reported = True
        if not due:
            return None
        names = ", ".join(f"{s.name} ({s.signal}, {now_s - s.began_s:.0f} s)" for s in due)
        return f"still running {self.after_s:.0f} s after their stop began: {names}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--after-s", type=float, default=10.0)
    parser.add_argument("--prefix", default="[stop-watch]")
    args = parser.parse_args()
    book = StopBook(args.after_s)
    # test-images.sh ends it with SIGTERM: leave through `finally`, which ends `docker events` too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    lock = threading.Lock()

    def say(line: str | None) -> None:
        if line:
            print(f"{args.prefix} {line}", file=sys.stderr, flush=True)

    def tick() -> None:
        while True:
            time.sleep(0.5)
            with lock:
                say(book.slow(time.monotonic()))

    threading.Thread(target=tick, daemon=True).start()
    events = subprocess.Popen(["docker", "events", "--format", "{{json .}}", "--filter", "type=container"],
                              stdout=subprocess.PIPE, text=True)
    assert events.stdout is not None
    try:
        for line in events.stdout:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            with lock:
                say(book.on_event(event, time.monotonic()))
    except KeyboardInterrupt:
        pass
    finally:
        events.terminate()
        events.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
