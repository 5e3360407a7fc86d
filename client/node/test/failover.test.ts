/**
 * Endpoint lists (docs/failover.md): a client given `standby,active` connects to one endpoint at a time, finds
 * the first one silent (a standby binds no port, or the broker was killed), moves to the next and gets its
 * result there; requests that only read (status, ping) are sent again there, RETRY and RELOAD are not.
 */

import assert from "node:assert/strict";
import * as net from "node:net";
import { after, before, describe, test } from "node:test";

import { configure, getWorkerStatus, healthCheck, shutdownWorkerManager } from "../src/audioGenerator.js";
import { TtsClient } from "../src/client.js";
import { BrokerUnavailableError } from "../src/errors.js";
import type { Logger } from "../src/types.js";
import { Cluster } from "./cluster.js";

/** A loopback port that accepts nothing for the test's life (bound, never listening: connections are refused). */
async function deadEndpoint(): Promise<{ url: string; close: () => void }> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return { url: `tcp://127.0.0.1:${port}`, close: () => undefined };
}

function collecting(): Logger & { lines: string[] } {
  const lines: string[] = [];
  return { lines, warn: (m) => lines.push(m), debug: () => undefined };
}

/** Pings every 200 ms: a broker is lost after 3 of them (about 0.6 s), far inside these requests' 10 s. */
const PING_MS = 200;
const REQUEST_TIMEOUT_MS = 10_000;
/** How soon a request pending on a lost broker must be answered by the next one. */
const MOVED_WITHIN_MS = 4_000;

describe("endpoint list", { timeout: 120_000 }, () => {
  const cluster = new Cluster({ workers: 1, concurrency: 1 });
  const first = new Cluster({ workers: 0 }); // a second broker, killed by a test
  before(async () => {
    await Promise.all([cluster.start(), first.start()]);
  });
  after(async () => {
    await shutdownWorkerManager();
    await Promise.all([cluster.stop(), first.stop()]);
  });

  test("a silent first endpoint: the client moves on and the job is done by the broker that answers", async () => {
    const dead = await deadEndpoint();
    const lines: string[] = [];
    const log: Logger = { warn: (m) => lines.push(m), debug: () => undefined };
    const client = new TtsClient({ brokerUrl: `${dead.url},${cluster.frontend}`, pingIntervalMs: 200, logger: log });
    try {
      const result = await client.synthesize("Failover line.", { speaker: "default" });
      assert.equal(result.sampleRate, 16000);
      assert.ok(result.audio.length > 0);
      assert.ok(lines.some((line) => line.startsWith("trying the next broker")), lines.join("\n"));
    } finally {
      await client.close();
      dead.close();
    }
  });

  test("status and ping pending when the first broker is killed are sent again to the next one", async () => {
    const log = collecting();
    const client = new TtsClient({ brokerUrl: `${first.frontend},${cluster.frontend}`, pingIntervalMs: PING_MS,
      requestTimeoutMs: REQUEST_TIMEOUT_MS, logger: log });
    try {
      assert.equal((await client.status()).broker_id, first.brokerId);
      await first.stopBroker("SIGKILL");
      // Nothing else is pending: only these requests keep the liveness pings going.
      const t0 = performance.now();
      const [status, pong] = await Promise.all([client.status(), client.ping()]);
      const elapsedMs = performance.now() - t0;
      assert.equal(status.broker_id, cluster.brokerId);
      assert.equal(pong.brokerId, cluster.brokerId);
      assert.ok(elapsedMs < MOVED_WITHIN_MS, `answered after ${Math.round(elapsedMs)} ms`);
      assert.ok(log.lines.some((line) => line.startsWith("trying the next broker")), log.lines.join("\n"));
    } finally {
      await client.close();
    }
  });

  test("getWorkerStatus and healthCheck on a silent first endpoint are answered by the next broker", async () => {
    const dead = await deadEndpoint();
    configure({ brokerUrl: `${dead.url},${cluster.frontend}`, pingIntervalMs: PING_MS, requestTimeoutMs: REQUEST_TIMEOUT_MS,
      healthTimeoutMs: REQUEST_TIMEOUT_MS, logger: collecting() });
    try {
      const t0 = performance.now();
      const [status, healthy] = await Promise.all([getWorkerStatus(), healthCheck()]);
      const elapsedMs = performance.now() - t0;
      assert.equal(status.broker_id, cluster.brokerId);
      assert.equal(healthy, true);
      assert.ok(elapsedMs < MOVED_WITHIN_MS, `answered after ${Math.round(elapsedMs)} ms`);
    } finally {
      await shutdownWorkerManager();
      dead.close();
    }
  });

  test("a RETRY pending when the client moves on fails at once instead of being sent twice", async () => {
    const dead = await deadEndpoint();
    const client = new TtsClient({ brokerUrl: `${dead.url},${cluster.frontend}`, pingIntervalMs: PING_MS,
      requestTimeoutMs: REQUEST_TIMEOUT_MS, logger: collecting() });
    try {
      const t0 = performance.now();
      await assert.rejects(client.retry("failover-retry-1"), (err: unknown) => {
        assert.ok(err instanceof BrokerUnavailableError, String(err));
        assert.match(err.message, /lost before it answered RETRY/);
        return true;
      });
      assert.ok(performance.now() - t0 < MOVED_WITHIN_MS);
    } finally {
      await client.close();
      dead.close();
    }
  });

  test("a malformed entry in the list is refused at once", () => {
    assert.throws(() => new TtsClient({ brokerUrl: `${cluster.frontend},not-a-url` }), /malformed broker URL/);
  });
});
