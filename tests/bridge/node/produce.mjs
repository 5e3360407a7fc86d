// The BullMQ producer of tests/bridge and benchmarks/bench_bridges.py: a Node backend's side of the queue.
//
//   node produce.mjs add REDIS_URL QUEUE JOBS_JSON_FILE   queue.addBulk([{name, data, opts}, ...]); prints the count
//   node produce.mjs results REDIS_URL QUEUE              one JSON line per job: id, state, returnvalue, failedReason
import { readFileSync } from "node:fs";
import { Queue } from "bullmq";

const [command, redisUrl, queueName, file] = process.argv.slice(2);
const url = new URL(redisUrl);
const connection = { host: url.hostname, port: Number(url.port), db: Number(url.pathname.slice(1) || 0),
                     maxRetriesPerRequest: null };
const queue = new Queue(queueName, { connection });

try {
  if (command === "add") {
    const jobs = JSON.parse(readFileSync(file, "utf8"));
    for (let i = 0; i < jobs.length; i += 200) {
      await queue.addBulk(jobs.slice(i, i + 200));
    }
    console.log(JSON.stringify({ added: jobs.length }));
  } else if (command === "results") {
    const states = ["completed", "failed", "active", "wait", "delayed", "prioritized", "waiting-children"];
    for (const state of states) {
      const jobs = await queue.getJobs([state], 0, -1);
      for (const job of jobs) {
        if (!job) continue;
        console.log(JSON.stringify({ id: job.id, state, returnvalue: job.returnvalue ?? null,
                                     failedReason: job.failedReason ?? null, attemptsMade: job.attemptsMade,
                                     progress: job.progress }));
      }
    }
  } else {
    console.error(`unknown command ${command}: add | results`);
    process.exitCode = 2;
  }
} finally {
  await queue.close();
}
