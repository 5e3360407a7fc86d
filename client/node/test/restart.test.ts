/** A broker restart in the middle of a batch: the client resubmits unfinished jobs with the same ids. */

import assert from "node:assert/strict";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";

import { configure, createMessageChunks, getClient, processMessageChunks, shutdownWorkerManager } from "../src/audioGenerator.js";
import { TtsClient } from "../src/client.js";
import type { Logger } from "../src/types.js";
import { Cluster, waitFor } from "./cluster.js";
import { parseWav, toneSamples } from "./wavcheck.js";

function collecting(): Logger & { lines: string[] } {
  const lines: string[] = [];
  return { lines, warn: (m) => lines.push(m), debug: () => undefined };
}

for (const journal of [false, true]) describe(`broker restart (${journal ? "with" : "without"} journal)`, { timeout: 120_000 }, () => {
  const cluster = new Cluster({ workers: 1, concurrency: 2, engineOpts: { latency_s: 0.05 }, journal, brokerArgs: ["--drain-grace-s", "0.3"] });
  let out: string;

  before(async () => {
    await cluster.start();
    out = await mkdtemp(path.join(tmpdir(), "tts-node-restart-"));
  });
  after(async () => {
    await shutdownWorkerManager();
    await cluster.stop();
    if (out) await rm(out, { recursive: true, force: true });
  });

  test("kill -9 the broker mid-batch, start a new one: every line still arrives", { timeout: 90_000 }, async () => {
    const log = collecting();
    configure({ brokerUrl: cluster.frontend, pingIntervalMs: 250, logger: log });
    const messages = Array.from({ length: 150 }, (_, i) => ({ text: `Restart line ${i}.`, speaker: "default", id: i }));
    const batch = processMessageChunks(createMessageChunks(messages, 25), out);
    const client = getClient();
    await waitFor("some jobs done", () => (client.stats.completed >= 20 ? true : undefined), 30_000);
    const oldBrokerId = cluster.brokerId;
    await cluster.stopBroker("SIGKILL");
    const doneAtKill = client.stats.completed;
    assert.ok(doneAtKill < 150, "the batch was still running when the broker died");
    await cluster.startBroker();
    assert.notEqual(cluster.brokerId, oldBrokerId);

    const files = await batch;
    assert.equal(files.length, 150);
    assert.equal((await readdir(out)).length, 150);
    for (const [i, file] of files.entries()) {
      assert.equal(path.basename(file), `0_${i}.wav`);
      assert.equal(parseWav(await readFile(file)).dataBytes, toneSamples(`Restart line ${i}.`) * 2);
    }
    assert.ok(client.stats.brokerRestarts >= 1, "the client saw a new broker_id");
    assert.ok(client.stats.resubmitted > 0, "unfinished jobs were resubmitted");
    if (!journal) assert.ok(client.stats.resubmitted >= 150 - doneAtKill, "the new broker knew none of them");
    assert.ok(log.lines.some((l) => l.includes("broker restarted")), log.lines.join("\n"));
  });

  test("a stream queued behind other jobs survives a restart", { timeout: 60_000, skip: journal && "once is enough" }, async () => {
    const client = new TtsClient({ brokerUrl: cluster.frontend, pingIntervalMs: 250, logger: collecting() });
    try {
      await cluster.waitForWorkers(2);
      // 60 jobs of 50 ms on 2 slots keep the stream queued for over a second
      const ahead = Array.from({ length: 60 }, (_, i) => client.synthesize(`Ahead ${i}.`));
      const text = "First sentence here. Second one. Third and last.";
      const stream = client.stream(text, { jobId: "node-stream-restart" });
      await waitFor("jobs finishing on the first broker", () => (client.stats.completed >= 4 ? true : undefined), 20_000);
      assert.equal((await client.jobStatus("node-stream-restart")).state, "queued");
      await cluster.stopBroker("SIGKILL");
      await cluster.startBroker();
      const chunks = [];
      for await (const chunk of stream) chunks.push(chunk);
      const result = await stream.result;
      assert.equal(chunks.length, 3);
      assert.deepEqual(Buffer.concat(chunks.map((c) => c.pcm)), Buffer.from(result.audio));
      assert.equal(result.audio.byteLength, toneSamples(text) * 2);
      assert.equal((await Promise.all(ahead)).length, 60);
      assert.ok(client.stats.brokerRestarts >= 1 && client.stats.resubmitted > 0);
    } finally {
      await client.close();
    }
  });

  test("SIGTERM drain, then a new broker: jobs failed with shutting_down are retried under their ids", { timeout: 60_000, skip: !journal && "needs the journal" }, async () => {
    const client = new TtsClient({ brokerUrl: cluster.frontend, pingIntervalMs: 250, logger: collecting() });
    try {
      await cluster.waitForWorkers(2);
      const jobs = Array.from({ length: 80 }, (_, i) => client.synthesize(`Drained ${i}.`, { jobId: `node-drain-${i}` }));
      await waitFor("jobs finishing before the drain", () => (client.stats.completed >= 4 ? true : undefined), 20_000);
      await cluster.stopBroker("SIGTERM"); // 0.3 s grace, then the rest fail with shutting_down
      await cluster.startBroker();
      const results = await Promise.all(jobs);
      assert.equal(results.length, 80);
      assert.ok(client.stats.retried > 0, "shutting_down errors were retried");
      const view = await client.jobStatus("node-drain-79");
      assert.equal(view.state, "done");
    } finally {
      await client.close();
    }
  });
});
