// tts-broker dashboard: polls /api/dashboard (the broker's latest snapshot) and draws it. No libraries.
"use strict";

const POLL_MS = 1000;
const $ = (id) => document.getElementById(id);

function text(value) {
  return value === null || value === undefined ? "–" : String(value);
}

function mib(bytes) {
  return bytes ? (bytes / 1048576).toFixed(0) + " MiB" : "–";
}

function cell(row, value, cls) {
  const td = document.createElement("td");
  td.textContent = text(value);
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function fill(tbody, items, build) {
  const rows = items.map((item) => {
    const tr = document.createElement("tr");
    build(tr, item);
    return tr;
  });
  tbody.replaceChildren(...rows);
}

// One chart: series of [t, value] drawn as lines with a y axis from 0 to the maximum.
function drawChart(canvas, lines, unit) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || canvas.width;
  const height = canvas.clientHeight || canvas.height;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  const g = canvas.getContext("2d");
  g.scale(ratio, ratio);
  g.clearRect(0, 0, width, height);
  const pad = { left: 44, right: 8, top: 8, bottom: 18 };
  const points = lines.flatMap((l) => l.points);
  if (points.length < 2) {
    g.fillStyle = "#8793a1";
    g.fillText("collecting data…", pad.left, height / 2);
    return;
  }
  const t0 = Math.min(...points.map((p) => p[0]));
  const t1 = Math.max(...points.map((p) => p[0]));
  const vmax = Math.max(1, ...points.map((p) => p[1])) * 1.1;
  const x = (t) => pad.left + ((t - t0) / Math.max(t1 - t0, 1)) * (width - pad.left - pad.right);
  const y = (v) => height - pad.bottom - (v / vmax) * (height - pad.top - pad.bottom);
  g.strokeStyle = "#2a3340";
  g.fillStyle = "#8793a1";
  g.font = "11px system-ui, sans-serif";
  g.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const v = (vmax / 4) * i;
    g.beginPath();
    g.moveTo(pad.left, y(v));
    g.lineTo(width - pad.right, y(v));
    g.stroke();
    g.fillText(v >= 10 ? v.toFixed(0) : v.toFixed(1), 4, y(v) + 4);
  }
  g.fillText(`${Math.round(t1 - t0)} s`, width - pad.right - 30, height - 4);
  lines.forEach((line, index) => {
    g.strokeStyle = line.colour;
    g.lineWidth = 2;
    g.beginPath();
    line.points.forEach((p, i) => (i ? g.lineTo(x(p[0]), y(p[1])) : g.moveTo(x(p[0]), y(p[1]))));
    g.stroke();
    g.fillStyle = line.colour;
    g.fillText(`${line.name}${unit}`, pad.left + 6 + index * 110, pad.top + 10);
  });
}

function rates(series) {
  const out = [];
  for (let i = 1; i < series.length; i++) {
    const dt = series[i].t - series[i - 1].t;
    const dn = series[i].done + series[i].failed - series[i - 1].done - series[i - 1].failed;
    if (dt > 0) out.push([series[i].t, Math.max(dn, 0) / dt]);
  }
  return out;
}

function render(page) {
  const status = page.status || {};
  const jobs = status.jobs || {};
  const workers = status.workers || [];
  const series = page.series || [];
  $("broker-id").textContent = `${text(status.broker_id)} v${text(status.version)}` +
    (status.draining ? " · draining" : "");
  $("queue-depth").textContent = text(status.queue_depth);
  $("jobs-running").textContent = text(jobs.running);
  $("jobs-done").textContent = text(jobs.done);
  $("jobs-failed").textContent = text(jobs.failed);
  $("worker-count").textContent = String(workers.length);
  const perSecond = rates(series);
  const recent = perSecond.slice(-10);
  const mean = recent.length ? recent.reduce((a, p) => a + p[1], 0) / recent.length : null;
  $("throughput").textContent = mean === null ? "–" : `${mean.toFixed(1)}/s`;

  fill($("workers").tBodies[0], workers, (tr, w) => {
    tr.className = "worker";
    tr.dataset.workerId = w.worker_id;
    cell(tr, w.worker_id);
    cell(tr, w.name);
    cell(tr, w.model ? `${w.engine}:${w.model}` : w.engine);
    cell(tr, w.device);
    cell(tr, `${w.state} ${w.busy}/${w.capacity}`, `state-${w.state}`);
    cell(tr, w.jobs_done);
    cell(tr, w.jobs_failed, w.jobs_failed ? "state-failed" : "");
    cell(tr, `${Math.round(w.mean_gen_ms)} ms`);
    cell(tr, mib(w.rss_bytes));
    cell(tr, mib(w.gpu_mem_bytes));
    cell(tr, `${(w.last_seen_ms / 1000).toFixed(1)} s ago`);
  });
  $("no-workers").hidden = workers.length > 0;

  fill($("recent-jobs").tBodies[0], page.jobs || [], (tr, j) => {
    cell(tr, j.job_id);
    cell(tr, j.cached ? `${j.state} (cache)` : j.state, `state-${j.state}`);
    cell(tr, j.attempt);
    cell(tr, j.model);
    cell(tr, j.worker_id);
    cell(tr, `${j.queued_ms} ms`);
    cell(tr, j.run_ms === null ? "–" : `${j.run_ms} ms`);
  });
  const failures = page.failures || [];
  fill($("failures").tBodies[0], failures, (tr, j) => {
    cell(tr, j.job_id);
    cell(tr, j.error ? j.error.code : "", "state-failed");
    cell(tr, j.error ? j.error.message : "", "err");
    cell(tr, (j.workers || []).slice(-3).join(", "));
  });
  $("no-failures").hidden = failures.length > 0;

  drawChart($("chart-throughput"), [
    { name: "jobs/s", colour: "#4cc38a", points: perSecond },
    { name: "queued", colour: "#5aa9e6", points: series.map((p) => [p.t, p.queued]) },
  ], "");
  drawChart($("chart-latency"), [
    { name: "p50", colour: "#e5b84a", points: series.filter((p) => p.p50_ms !== null).map((p) => [p.t, p.p50_ms]) },
    { name: "p95", colour: "#ef6b6b", points: series.filter((p) => p.p95_ms !== null).map((p) => [p.t, p.p95_ms]) },
  ], " ms");
  $("updated").textContent = `updated ${new Date((page.taken_at || 0) * 1000).toLocaleTimeString()}`;
}

async function poll() {
  const conn = $("conn");
  try {
    // The page passes its own ?token= on (the broker may require a bearer token for /api/*).
    const response = await fetch("/api/dashboard" + window.location.search, { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    render(await response.json());
    conn.textContent = "live";
    conn.className = "pill ok";
  } catch (err) {
    conn.textContent = `broker unreachable (${err.message})`;
    conn.className = "pill bad";
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

poll();
