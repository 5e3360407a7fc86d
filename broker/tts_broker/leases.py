"""The lease book: each running attempt's time limit and how many jobs each client has running.

A lease is one attempt of one job on one worker, named (job_id, attempt). The worker registry knows which
worker holds which lease; this book knows when each attempt must end and which clients are at their
in-flight cap (max_client_running), which dispatch passes over. Expiry pops a heap: a tick looks only at
leases that are due, never at every running job.
"""

from __future__ import annotations

import collections
import heapq
from typing import Optional

from tts_protocol.constants import JobState

from tts_broker.jobs import Job, JobTable


class LeaseBook:
    """Time limits of running attempts and jobs in flight per client."""

    def __init__(self, jobs: JobTable, *, job_timeout_s: float, max_client_running: int) -> None:
        self.jobs = jobs  # deadlines name jobs by id: a finished job's audio is not kept alive by its old lease
        self.job_timeout_s = job_timeout_s
        self.max_client_running = max_client_running
        self.in_flight: collections.Counter[bytes] = collections.Counter()  # running jobs per client
        self._running = 0  # their sum: jobs in flight
        self.at_running_cap: set[bytes] = set()  # clients at max_client_running: passed over by dispatch
        self._deadlines: list[tuple[float, str, int]] = []  # (deadline, job_id, attempt)

    def start(self, job: Job, now: float) -> float:
        """Count a new attempt of `job` (already RUNNING) and set its deadline; returns its time limit (s)."""
        client = job.client
        self.in_flight[client] += 1
        self._running += 1
        cap = self.max_client_running
        if cap and self.in_flight[client] >= cap:
            self.at_running_cap.add(client)
        req = job.request
        limit_s = req.timeout_ms / 1000 if req.timeout_ms else self.job_timeout_s
        if job.deadline is not None:
            limit_s = min(limit_s, max(job.deadline - now, 0.001))
        job.lease_deadline = now + limit_s
        heapq.heappush(self._deadlines, (job.lease_deadline, job.job_id, job.attempt))
        return limit_s

    def end(self, job: Job) -> bool:
        """The attempt of `job` is over (answered, failed, requeued); True if its client left its cap."""
        client = job.client
        self._running -= 1
        left = self.in_flight[client] - 1
        if left > 0:
            self.in_flight[client] = left
        else:
            del self.in_flight[client]
        if client in self.at_running_cap:
            self.at_running_cap.discard(client)
            return True
        return False

    def expired(self, now: float) -> list[Job]:
        """Running jobs whose current attempt passed its time limit (older attempts' entries are skipped)."""
        heap, due = self._deadlines, []
        while heap and heap[0][0] <= now:
            _, job_id, attempt = heapq.heappop(heap)
            job = self.jobs.get(job_id)
            if job is not None and job.state is JobState.RUNNING and job.attempt == attempt:
                due.append(job)
        return due

    def running(self, client: Optional[bytes] = None) -> int:
        """Jobs in flight, of one client or of all."""
        return self.in_flight.get(client, 0) if client is not None else self._running
