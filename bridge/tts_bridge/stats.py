"""A bridge's counters: Prometheus metrics (tts_bridge_*) and the one-line status the CLI prints."""

from __future__ import annotations

import dataclasses
import time

from prometheus_client import CollectorRegistry, Counter, Gauge


@dataclasses.dataclass
class BridgeStats:
    """consumed, in flight, acked, answered, failed, dead-lettered; lag is what the queue still holds."""

    bridge: str
    registry: CollectorRegistry = dataclasses.field(default_factory=CollectorRegistry)
    consumed: int = 0
    acked: int = 0
    answered: int = 0
    failed: int = 0
    dead_lettered: int = 0
    in_flight: int = 0
    lag: int = 0
    started: float = dataclasses.field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        labels = ["bridge"]
        self._consumed = Counter("tts_bridge_consumed", "Messages taken from the queue", labels,
                                 registry=self.registry).labels(self.bridge)
        self._acked = Counter("tts_bridge_acked", "Messages acknowledged after the broker held their job", labels,
                              registry=self.registry).labels(self.bridge)
        self._answered = Counter("tts_bridge_answered", "Jobs answered with audio", labels,
                                 registry=self.registry).labels(self.bridge)
        self._failed = Counter("tts_bridge_failed", "Messages answered with a failure (dead-lettered)", labels,
                               registry=self.registry).labels(self.bridge)
        self._in_flight = Gauge("tts_bridge_in_flight", "Jobs submitted and not yet answered", labels,
                                registry=self.registry).labels(self.bridge)
        self._lag = Gauge("tts_bridge_lag", "Messages waiting in the queue (not yet delivered to a bridge)", labels,
                          registry=self.registry).labels(self.bridge)

    def on_consumed(self) -> None:
        self.consumed += 1
        self._consumed.inc()

    def on_acked(self) -> None:
        self.acked += 1
        self._acked.inc()

    def on_answered(self) -> None:
        self.answered += 1
        self._answered.inc()

    def on_failed(self) -> None:
        self.failed += 1
        self._failed.inc()

    def start_job(self) -> None:
        self.in_flight += 1
        self._in_flight.set(self.in_flight)

    def end_job(self) -> None:
        self.in_flight -= 1
        self._in_flight.set(self.in_flight)

    def set_lag(self, lag: int) -> None:
        self.lag = lag
        self._lag.set(lag)

    def status_line(self) -> str:
        up_s = time.monotonic() - self.started
        return (f"{self.bridge}: consumed={self.consumed} in_flight={self.in_flight} acked={self.acked} "
                f"answered={self.answered} failed={self.failed} lag={self.lag} up={up_s:.0f}s")
