// Node client vs Python client against the same broker and tone workers, in the same run.
//
//   npm run bench -- [--jobs 2000] [--in-flight 64] [--latency-jobs 300] [--rounds 2] [--concurrency 2]
//
// Prints jobs/s (jobs kept in flight) and p50/p95 round trip of one job at a time, per client and round.
// The tone engine with no latency makes the figures measure the plumbing (client, broker, worker), not TTS.
// Result cache off (cache=false) and unique texts, so every job is synthesised.

import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

import { TtsClient } from "../dist/src/index.js";
import { Cluster, findPython } from "../dist/test/cluster.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const { values: args } = parseArgs({
  options: {
    jobs: { type: "string", default: "2000" },
    "in-flight": { type: "string", default: "64" },
    "latency-jobs": { type: "string", default: "300" },
    rounds: { type: "string", default: "2" },
    concurrency: { type: "string", default: "2" },
  },
});
const JOBS = Number(args.jobs);
const IN_FLIGHT = Number(args["in-flight"]);
const LATENCY_JOBS = Number(args["latency-jobs"]);
const ROUNDS = Number(args.rounds);

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const p95 = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length * 0.95) - 1];

async function benchNode(url, nonce) {
  const client = new TtsClient({ brokerUrl: url });
  try {
    await Promise.all(Array.from({ length: 20 }, (_, i) => client.synthesize(`Warm up node ${nonce} ${i}.`, { cache: false })));
    const lat = [];
    for (let i = 0; i < LATENCY_JOBS; i++) {
      const t0 = performance.now();
      await client.synthesize(`Latency node ${nonce} ${i}.`, { cache: false });
      lat.push(performance.now() - t0);
    }
    const loaded = [];
    let next = 0;
    const t0 = performance.now();
    const lane = async () => {
      while (next < JOBS) {
        const i = next++;
        const s = performance.now();
        await client.synthesize(`Throughput node ${nonce} ${i}.`, { cache: false });
        loaded.push(performance.now() - s);
      }
    };
    await Promise.all(Array.from({ length: IN_FLIGHT }, lane));
    const seconds = (performance.now() - t0) / 1000;
    return { jobs_per_s: JOBS / seconds, p50_ms: median(lat), p95_ms: p95(lat), loaded_p50_ms: median(loaded) };
  } finally {
    await client.close();
  }
}

function benchPython(url, nonce) {
  return new Promise((resolve, reject) => {
    const child = spawn(findPython(), [path.join(HERE, "python_client.py"), url, String(JOBS), String(IN_FLIGHT), String(LATENCY_JOBS), nonce], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.on("exit", (code) => (code === 0 ? resolve(JSON.parse(out.trim().split("\n").pop())) : reject(new Error(`python bench exited ${code}`))));
  });
}

const fmt = (r) =>
  `${r.jobs_per_s.toFixed(0).padStart(6)} jobs/s   p50 ${r.p50_ms.toFixed(2).padStart(6)} ms   p95 ${r.p95_ms.toFixed(2).padStart(6)} ms   p50 under load ${r.loaded_p50_ms.toFixed(1).padStart(6)} ms`;

const cluster = new Cluster({ workers: 1, concurrency: Number(args.concurrency) });
try {
  await cluster.start();
  console.log(`broker ${cluster.frontend}, 1 tone worker supervisor x ${args.concurrency} processes, ` +
    `${JOBS} jobs with ${IN_FLIGHT} in flight, ${LATENCY_JOBS} one-at-a-time jobs, node ${process.version}`);
  const rows = [];
  for (let round = 1; round <= ROUNDS; round++) {
    for (const [name, run] of [["node  ", benchNode], ["python", benchPython]]) {
      const r = await run(cluster.frontend, randomBytes(4).toString("hex"));
      rows.push({ name: name.trim(), round, ...r });
      console.log(`round ${round} ${name} ${fmt(r)}`);
    }
  }
  console.log(JSON.stringify(rows));
} finally {
  await cluster.stop();
}
