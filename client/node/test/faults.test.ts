/** Cancel, timeouts, abort, retryable errors and unreachable or malformed broker URLs. */

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { configure, generateAudio, healthCheck, shutdownWorkerManager } from "../src/audioGenerator.js";
import { TtsClient } from "../src/client.js";
import { AbortError, BrokerUnavailableError, InvalidArgumentError, JobFailedError, TimeoutError } from "../src/errors.js";
import type { Logger } from "../src/types.js";
import { Cluster, freePort, waitFor } from "./cluster.js";

const quiet: Logger = { warn: () => undefined, debug: () => undefined };

describe("slow jobs (tone latency_s=2)", { timeout: 60_000 }, () => {
  const cluster = new Cluster({ workers: 1, concurrency: 2, engineOpts: { latency_s: 2 } });
  let client: TtsClient;

  before(async () => {
    await cluster.start();
    client = new TtsClient({ brokerUrl: cluster.frontend, logger: quiet });
  });
  after(async () => {
    await client?.close();
    await cluster.stop();
  });

  const waitForState = (jobId: string, state: string): Promise<true> =>
    waitFor(`job ${jobId} ${state}`, async () => ((await client.jobStatus(jobId)).state === state ? true : undefined), 5000, 50);

  test("cancel: the pending call rejects with the broker's cancelled error", { timeout: 10_000 }, async () => {
    const job = client.synthesize("Slow job to cancel.", { jobId: "node-cancel-1" });
    await waitForState("node-cancel-1", "running");
    const t0 = performance.now();
    await client.cancel("node-cancel-1");
    await assert.rejects(job, (err: unknown) => err instanceof JobFailedError && err.remoteCode === "cancelled" && err.jobId === "node-cancel-1");
    assert.ok(performance.now() - t0 < 1500, "cancel took effect before the engine's 2 s latency");
    assert.equal((await client.jobStatus("node-cancel-1")).state, "cancelled");
  });

  test("timeoutMs: rejects with TimeoutError and cancels the job at the broker", { timeout: 10_000 }, async () => {
    const t0 = performance.now();
    await assert.rejects(client.synthesize("Too slow.", { jobId: "node-timeout-1", timeoutMs: 300 }), (err: unknown) => {
      assert.ok(err instanceof TimeoutError);
      assert.equal(err.code, "timeout");
      assert.equal(err.timeoutMs, 300);
      return true;
    });
    const elapsed = performance.now() - t0;
    assert.ok(elapsed >= 290 && elapsed < 1500, `timed out after ${elapsed} ms`);
    await waitForState("node-timeout-1", "cancelled");
  });

  test("AbortSignal: aborting rejects with AbortError and cancels the job", { timeout: 10_000 }, async () => {
    const controller = new AbortController();
    const job = client.synthesize("Aborted.", { jobId: "node-abort-1", signal: controller.signal });
    await waitForState("node-abort-1", "running");
    controller.abort(new Error("user went away"));
    await assert.rejects(job, (err: unknown) => err instanceof AbortError && (err.cause as Error).message === "user went away");
    await waitForState("node-abort-1", "cancelled");
    await assert.rejects(client.synthesize("x", { signal: AbortSignal.abort() }), AbortError);
  });

  test("request timeouts and abort apply to status calls too", { timeout: 5_000 }, async () => {
    await assert.rejects(client.status({ signal: AbortSignal.abort() }), { code: "aborted" });
    const status = await client.status({ timeoutMs: 2000 });
    assert.equal(status.workers.length, 2);
  });
});

describe("retryable errors (queue_full) are retried with backoff", { timeout: 60_000 }, () => {
  const cluster = new Cluster({ workers: 1, concurrency: 1, engineOpts: { latency_s: 0.1 }, brokerArgs: ["--max-queue", "2"] });
  before(async () => {
    await cluster.start();
  });
  after(async () => {
    await cluster.stop();
  });

  test("12 jobs on a queue of 2 all finish", { timeout: 40_000 }, async () => {
    const client = new TtsClient({ brokerUrl: cluster.frontend, maxRetries: 20, retryBackoffMs: 100, retryBackoffMaxMs: 1000, logger: quiet });
    try {
      const results = await Promise.all(Array.from({ length: 12 }, (_, i) => client.synthesize(`Queued ${i}.`)));
      assert.equal(results.length, 12);
      assert.ok(client.stats.retried > 0, "some SUBMITs met queue_full and were retried");
      assert.equal(client.stats.completed, 12);
    } finally {
      await client.close();
    }
  });

  test("with retries exhausted the job fails with the remote code", { timeout: 20_000 }, async () => {
    const client = new TtsClient({ brokerUrl: cluster.frontend, maxRetries: 0, logger: quiet });
    try {
      const outcomes = await Promise.allSettled(Array.from({ length: 8 }, (_, i) => client.synthesize(`Burst ${i}.`)));
      const failed = outcomes.filter((o) => o.status === "rejected").map((o) => (o as PromiseRejectedResult).reason as JobFailedError);
      assert.ok(failed.length > 0);
      for (const err of failed) {
        assert.equal(err.remoteCode, "queue_full");
        assert.equal(err.retryable, true);
      }
    } finally {
      await client.close();
    }
  });
});

describe("bad or unreachable broker URLs fail clearly and quickly", { timeout: 20_000 }, () => {
  after(async () => {
    await shutdownWorkerManager();
  });

  test("a malformed URL throws InvalidArgumentError at once", { timeout: 2_000 }, () => {
    for (const url of ["localhost:5555", "http://127.0.0.1:5555", "tcp://", "", "tcp://127.0.0.1:5555 extra"]) {
      assert.throws(() => new TtsClient({ brokerUrl: url }), InvalidArgumentError, url);
      assert.throws(() => configure({ brokerUrl: url }), InvalidArgumentError, url);
    }
  });

  test("a URL ZeroMQ refuses rejects the first call at once", { timeout: 2_000 }, async () => {
    const client = new TtsClient({ brokerUrl: "tcp://no-port-here" });
    const t0 = performance.now();
    await assert.rejects(client.synthesize("x"), (err: unknown) => err instanceof InvalidArgumentError && /no-port-here/.test(err.message));
    assert.ok(performance.now() - t0 < 200);
    await client.close();
  });

  test("an unreachable broker: healthCheck is false within its timeout, calls time out", { timeout: 10_000 }, async () => {
    const url = `tcp://127.0.0.1:${await freePort()}`;
    configure({ brokerUrl: url });
    let t0 = performance.now();
    assert.equal(await healthCheck({ timeoutMs: 500 }), false);
    let elapsed = performance.now() - t0;
    assert.ok(elapsed >= 450 && elapsed < 1500, `healthCheck took ${elapsed} ms`);

    const client = new TtsClient({ brokerUrl: url, logger: quiet });
    t0 = performance.now();
    await assert.rejects(client.synthesize("Nobody listens.", { timeoutMs: 400 }), TimeoutError);
    elapsed = performance.now() - t0;
    assert.ok(elapsed < 1500, `synthesize timed out after ${elapsed} ms`);
    await assert.rejects(client.connect({ waitMs: 300 }), BrokerUnavailableError);
    await client.close();
    await assert.rejects(TtsClient.connect({ brokerUrl: url, waitMs: 200 }), { code: "unavailable" });
  });
});

describe("connect timeout: a broker that never answers or stops answering is BrokerUnavailableError in seconds", { timeout: 60_000 }, () => {
  after(async () => {
    await shutdownWorkerManager();
  });

  test("generateAudio against a port where nothing listens, with the 300 s job timeout", { timeout: 10_000 }, async () => {
    const url = `tcp://127.0.0.1:${await freePort()}`;
    configure({ brokerUrl: url, connectTimeoutMs: 1000, logger: quiet });
    const t0 = performance.now();
    await assert.rejects(generateAudio("Nobody listens.", "default", 1, 0, "/tmp"), (err: unknown) =>
      err instanceof BrokerUnavailableError && /never answered/.test(err.message));
    const elapsed = performance.now() - t0;
    assert.ok(elapsed >= 900 && elapsed < 4000, `failed after ${elapsed} ms`);
  });

  test("a broker killed mid-job: the job fails with BrokerUnavailableError, not after jobTimeoutMs", { timeout: 40_000 }, async () => {
    const cluster = new Cluster({ workers: 1, engineOpts: { latency_s: 30 } });
    await cluster.start();
    const client = new TtsClient({ brokerUrl: cluster.frontend, logger: quiet, connectTimeoutMs: 1500 });
    try {
      const job = client.synthesize("A job the broker takes with it.", { jobId: "node-gone-1" });
      await waitFor("job running", async () => ((await client.jobStatus("node-gone-1")).state === "running" ? true : undefined), 10_000, 50);
      await cluster.stopBroker("SIGKILL");
      const t0 = performance.now();
      await assert.rejects(job, (err: unknown) => err instanceof BrokerUnavailableError && /has not answered/.test(err.message));
      const elapsed = performance.now() - t0;
      assert.ok(elapsed < 5000, `failed ${elapsed} ms after the broker died`);
    } finally {
      await client.close();
      await cluster.stop();
    }
  });
});
