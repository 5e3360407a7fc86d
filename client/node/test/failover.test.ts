/**
 * Endpoint lists (docs/failover.md): a client given `standby,active` connects to one endpoint at a time, finds
 * the first one silent (a standby binds no port), moves to the next and gets its result there.
 */

import assert from "node:assert/strict";
import * as net from "node:net";
import { after, before, describe, test } from "node:test";

import { TtsClient } from "../src/client.js";
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

describe("endpoint list", { timeout: 120_000 }, () => {
  const cluster = new Cluster({ workers: 1, concurrency: 1 });
  before(async () => {
    await cluster.start();
  });
  after(async () => {
    await cluster.stop();
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

  test("a malformed entry in the list is refused at once", () => {
    assert.throws(() => new TtsClient({ brokerUrl: `${cluster.frontend},not-a-url` }), /malformed broker URL/);
  });
});
