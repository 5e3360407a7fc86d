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
  const pad = { left: 44, right: 8, top: 8, bottom: 20 };
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
  // Time labels: clock times at the start, middle and end of the window (series t is wall-clock seconds).
  const clock = (t) => new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  [t0, (t0 + t1) / 2, t1].forEach((t, i) => {
    const label = clock(t);
    const w = g.measureText(label).width;
    g.fillText(label, Math.min(Math.max(x(t) - (i ? w / 2 : 0), pad.left), width - pad.right - w), height - 4);
  });
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
  // Failed jobs, each once (the dead letters); `failed` counts endings, a retried job that failed again twice.
  $("jobs-failed").textContent = text(jobs.dead_letters ?? jobs.failed);
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

  const wanted = $("job-filter").value;
  const shown = (page.jobs || []).filter((j) => !wanted || j.state === wanted);
  fill($("recent-jobs").tBodies[0], shown, (tr, j) => {
    tr.className = "job";
    tr.dataset.state = j.state;
    cell(tr, j.line ?? j.job_id).title = j.job_id;
    cell(tr, j.cached ? `${j.state} (cache)` : j.state, `state-${j.state}`);
    cell(tr, j.speaker);
    cell(tr, j.text, "excerpt").title = j.text || "";
    cell(tr, j.client);
    cell(tr, j.attempt);
    cell(tr, j.worker_id);
    cell(tr, `${j.queued_ms} ms`);
    cell(tr, j.run_ms === null ? "–" : `${j.run_ms} ms`);
  });
  const failures = page.failures || [];
  fill($("failures").tBodies[0], failures, (tr, j) => {
    cell(tr, j.line ?? j.job_id).title = j.job_id;
    cell(tr, j.error ? j.error.code : "", "state-failed");
    cell(tr, j.error ? j.error.message : "", "err").title = j.error ? j.error.message : "";
    cell(tr, (j.workers || []).slice(-3).join(", "));
  });
  $("no-failures").hidden = failures.length > 0;

  // Throughput and queue depth on charts of their own: each gets its own y axis.
  drawChart($("chart-throughput"), [{ name: "jobs/s", colour: "#4cc38a", points: perSecond }], "");
  drawChart($("chart-queue"), [{ name: "queued", colour: "#5aa9e6", points: series.map((p) => [p.t, p.queued]) }], "");
  const of = (key) => series.filter((p) => p[key] !== null && p[key] !== undefined).map((p) => [p.t, p[key]]);
  drawChart($("chart-latency"), [
    { name: "p50", colour: "#e5b84a", points: of("p50_ms") },
    { name: "p95", colour: "#ef6b6b", points: of("p95_ms") },
    { name: "waiting", colour: "#5aa9e6", points: of("wait_ms") },
    { name: "generating", colour: "#4cc38a", points: of("gen_ms") },
  ], " ms");
  $("updated").textContent = `updated ${new Date((page.taken_at || 0) * 1000).toLocaleTimeString()}`;
}

async function poll() {
  const conn = $("conn");
  try {
    // The page passes its own ?token= on (the broker may require a bearer token for /api/*).
    const response = await fetch("/api/dashboard" + window.location.search, { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    last = await response.json();
    render(last);
    conn.textContent = "live";
    conn.className = "pill ok";
  } catch (err) {
    conn.textContent = `broker unreachable (${err.message})`;
    conn.className = "pill bad";
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

let last = null; // the latest page, drawn again at once when the state filter changes
$("job-filter").addEventListener("change", () => { if (last) render(last); });

poll();
