// Drives the broker's dashboard in headless Debian chromium through playwright-core (tests/e2e/test_dashboard.py).
//
//   node dashboard_probe.mjs PLAYWRIGHT_PREFIX URL WORKERS TARGET OUT_DIR
//
// Prints JSON lines: {"event": "workers", ...} once the page lists WORKERS live workers (the test then starts
// its batch), {"event": "count", "value": N} whenever the "done" tile changes, and {"event": "done", ...} when
// it reaches TARGET, after saving screenshots (mid-batch and final) into OUT_DIR.
import { createRequire } from "node:module";
import path from "node:path";

const [prefix, url, workers, target, outDir] = process.argv.slice(2);
const { chromium } = createRequire(path.join(prefix, "package.json"))("playwright-core");
const emit = (event) => process.stdout.write(JSON.stringify(event) + "\n");

const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];

const context = await chromium.launchPersistentContext(path.join(outDir, "chromium-profile"), {
  executablePath: "/usr/bin/chromium", headless: true, args: FLAGS, viewport: { width: 1400, height: 900 },
});
try {
  const page = context.pages()[0] ?? (await context.newPage());
  const errors = [];
  page.on("pageerror", (err) => errors.push(String(err)));
  page.on("requestfailed", (req) => {
    if (!req.url().startsWith(url)) errors.push(`request to another origin: ${req.url()}`);
  });
  page.on("response", (res) => {
    if (res.status() >= 400) errors.push(`HTTP ${res.status()} for ${res.url()}`); // e.g. a favicon 404
  });
  await page.goto(url);
  // Live workers with their memory: RSS comes with a worker's first heartbeat, up to a second after READY.
  await page.waitForFunction((n) => {
    const rows = document.querySelectorAll("#workers tbody tr.worker");
    return rows.length >= n && [...rows].every((r) => (r.querySelector("td:nth-child(9)")?.textContent ?? "").endsWith("MiB"));
  }, Number(workers), { timeout: 30_000 });
  const ids = await page.$$eval("#workers tbody tr.worker", (rows) => rows.map((r) => r.dataset.workerId));
  const states = await page.$$eval("#workers tbody tr.worker td:nth-child(5)", (cells) => cells.map((c) => c.textContent));
  const memory = await page.$$eval("#workers tbody tr.worker td:nth-child(9)", (cells) => cells.map((c) => c.textContent));
  emit({ event: "workers", ids, states, memory, conn: await page.textContent("#conn"),
    done: Number(await page.textContent("#jobs-done")) });
  const seen = [];
  let mid = null;
  const deadline = Date.now() + 90_000;
  while (Date.now() < deadline) {
    const value = Number(await page.textContent("#jobs-done"));
    if (!seen.length || seen[seen.length - 1] !== value) {
      seen.push(value);
      emit({ event: "count", value });
    }
    if (mid === null && value > 0 && value < Number(target)) {
      mid = path.join(outDir, "dashboard-mid-batch.png");
      await page.screenshot({ path: mid, fullPage: true });
    }
    if (value >= Number(target)) break;
    await page.waitForTimeout(100);
  }
  await page.waitForTimeout(1500); // one more poll so the charts include the batch's last second
  const final = path.join(outDir, "dashboard-final.png");
  await page.screenshot({ path: final, fullPage: true });
  const rows = await page.$$eval("#recent-jobs tbody tr", (trs) => trs.map((tr) =>
    [...tr.querySelectorAll("td")].map((td) => td.textContent)));
  const failureHeights = await page.$$eval("#failures tbody tr", (trs) => trs.map((tr) => tr.getBoundingClientRect().height));
  await page.selectOption("#job-filter", "failed");
  await page.waitForTimeout(200);
  const filtered = await page.$$eval("#recent-jobs tbody tr", (trs) => trs.map((tr) => tr.dataset.state));
  await page.selectOption("#job-filter", "");
  const charts = await page.$$eval("canvas", (cs) => cs.map((c) => c.id));
  const favicon = await page.evaluate(async () => (await fetch("/favicon.ico")).status);
  emit({ event: "done", seen, screenshots: [mid, final].filter(Boolean), errors,
    recentRows: rows.length, rows, failureHeights, filtered, charts, favicon,
    failedTile: await page.textContent("#jobs-failed"),
    throughput: await page.textContent("#throughput") });
} finally {
  await context.close();
}
