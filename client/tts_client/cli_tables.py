"""Human-facing tables for `tts status` and `tts jobs` (colours, widths); the data comes from the broker."""

from __future__ import annotations

import sys

import click

from tts_protocol import routing
from tts_protocol.messages import JobView, StatusView


def clear_screen(text: str) -> str:
    """Text that replaces the terminal's contents (cursor home, clear) when stdout is a terminal."""
    return ("\x1b[H\x1b[2J" if sys.stdout.isatty() else "") + text + "\n"


def render_status(view: StatusView) -> str:
    """A coloured table of the workers, then queue and job counters."""
    headers = ["WORKER", "NAME", "ENGINE/MODEL", "STATE", "DONE", "FAILED", "MEAN GEN", "RSS"]
    rows = []
    for w in view.workers:
        rows.append([w.worker_id, w.name, routing.worker_key(w.engine, w.model),
                     f"{w.state} {w.busy}/{w.capacity}", str(w.jobs_done), str(w.jobs_failed),
                     f"{w.mean_gen_ms:.0f} ms", f"{w.rss_bytes / 2**20:.0f} MiB"])
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = [click.style("  ".join(h.ljust(widths[i]) for i, h in enumerate(headers)), bold=True)]
    for r in rows:
        cells = [c.ljust(widths[i]) for i, c in enumerate(r)]
        cells[3] = click.style(cells[3], fg="green" if r[3].startswith("idle") else "yellow")
        if r[5] != "0":
            cells[5] = click.style(cells[5], fg="red")
        lines.append("  ".join(cells))
    if not rows:
        lines.append(click.style("no workers connected", fg="yellow"))
    queue, jobs = view.queue, view.jobs
    lines.append("")
    lines.append(f"queue {queue.get('depth', 0)}/{queue.get('max', '?')}  running {jobs.get('running', 0)}  "
                 f"done {jobs.get('done', 0)}  failed {jobs.get('failed', 0)}  "
                 f"broker {view.broker_id} v{view.version} up {view.uptime_s:.0f}s"
                 + (click.style("  draining", fg="yellow") if view.draining else ""))
    if view.paused:
        lines.append(click.style(f"paused models: {', '.join(view.paused)}", fg="yellow"))
    supervisors = {(w.host, w.supervisor.get("pid")): w.supervisor for w in view.workers if w.supervisor}
    for (host, _pid), sup in sorted(supervisors.items(), key=lambda item: str(item[0])):
        lines.append(f"supervisor {host} pid {sup.get('pid', '?')}: {sup.get('workers', '?')} workers "
                     f"(min {sup.get('min', '?')}, max {sup.get('max', '?')}, target {sup.get('target', '?')}); "
                     f"last: {sup.get('last', '-')}")
    cache = jobs.get("cache")
    if isinstance(cache, dict):
        lines.append(f"result cache {cache.get('entries', 0)} entries, {cache.get('bytes', 0) / 2**20:.1f} MiB, "
                     f"hits {cache.get('hits', 0)}, misses {cache.get('misses', 0)}")
    return "\n".join(lines)


_STATE_COLOURS = {"done": "green", "queued": "cyan", "running": "yellow", "failed": "red", "cancelled": "magenta"}


def render_jobs(views: list[JobView]) -> str:
    """A coloured table of job views."""
    if not views:
        return click.style("no jobs", fg="yellow")
    headers = ["JOB", "STATE", "ATTEMPT", "PRIORITY", "QUEUED", "RAN", "WORKERS", "ERROR"]
    rows = []
    for v in views:
        error = f"{v.error.code}: {v.error.message}"[:80] if v.error else ("cache hit" if v.cached else "")
        rows.append([v.job_id, v.state.value, str(v.attempt), v.priority.value, f"{v.queued_ms} ms",
                     "-" if v.run_ms is None else f"{v.run_ms} ms", ",".join(v.workers[-3:]) or "-", error])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = [click.style("  ".join(h.ljust(widths[i]) for i, h in enumerate(headers)), bold=True)]
    for r in rows:
        cells = [c.ljust(widths[i]) for i, c in enumerate(r)]
        cells[1] = click.style(cells[1], fg=_STATE_COLOURS.get(r[1], "white"))
        lines.append("  ".join(cells))
    return "\n".join(lines)
