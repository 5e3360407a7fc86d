/** The client against a real broker and real tone workers: jobs, files, streaming, status, errors. */

import assert from "node:assert/strict";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";

import {
  configure,
  createMessageChunks,
  generateAudio,
  getClient,
  getWorkerStatus,
  healthCheck,
  processMessageChunks,
  shutdownWorkerManager,
} from "../src/audioGenerator.js";
import { TtsClient } from "../src/client.js";
import { BatchFailedError, ClosedError, JobFailedError, RequestFailedError } from "../src/errors.js";
import { Cluster } from "./cluster.js";
import { parseWav, toneSamples } from "./wavcheck.js";

describe("against a real broker and tone workers", { timeout: 120_000 }, () => {
  const cluster = new Cluster({ workers: 1, concurrency: 2, engineOpts: { fail_on: "FAILME" } });
  let client: TtsClient;
  let out: string;

  before(async () => {
    await cluster.start();
    client = new TtsClient({ brokerUrl: cluster.frontend });
    configure({ brokerUrl: cluster.frontend });
    out = await mkdtemp(path.join(tmpdir(), "tts-node-out-"));
  });

  after(async () => {
    await client?.close();
    await shutdownWorkerManager();
    await cluster.stop();
    if (out) await rm(out, { recursive: true, force: true });
  });

  test("one job: audio and metadata from the tone engine", { timeout: 15_000 }, async () => {
    const text = "Hello there. How are you?";
    const result = await client.synthesize(text, { speaker: "default" });
    assert.equal(result.engine, "tone");
    assert.equal(result.sampleRate, 16_000);
    assert.equal(result.channels, 1);
    assert.equal(result.attempt, 1);
    assert.equal(result.audio.byteLength, toneSamples(text) * 2);
    assert.equal(result.numSamples, toneSamples(text));
    assert.match(result.jobId, /^job-[0-9a-f]{16}$/);
    // deterministic engine: the same request gives the same bytes
    const again = await client.synthesize(text, { speaker: "default" });
    assert.deepEqual(Buffer.from(again.audio), Buffer.from(result.audio));
  });

  test("generateAudio writes {streamIndex}_{id}.wav atomically inside outputDir", { timeout: 15_000 }, async () => {
    const dir = path.join(out, "single");
    const file = await generateAudio("Hello, world!", "default", 1, 1, dir);
    assert.equal(file, path.join(dir, "1_1.wav"));
    const wav = parseWav(await readFile(file));
    assert.equal(wav.sampleRate, 16_000);
    assert.equal(wav.channels, 1);
    assert.equal(wav.bitsPerSample, 16);
    assert.equal(wav.dataBytes, toneSamples("Hello, world!") * 2);
    const hostile = await generateAudio("Hi.", null, "../../etc/passwd", "..", dir);
    assert.equal(hostile, path.join(dir, "_-5ec1f7e7__.._etc_passwd-3754d6cb.wav"));
    assert.deepEqual((await readdir(dir)).sort(), ["1_1.wav", "_-5ec1f7e7__.._etc_passwd-3754d6cb.wav"]); // no temp files left
  });

  test("500 jobs through createMessageChunks + processMessageChunks", { timeout: 90_000 }, async () => {
    const dir = path.join(out, "batch");
    const messages = Array.from({ length: 500 }, (_, i) => ({ text: `Line number ${i}.`, speaker: "default", id: i }));
    const chunks = createMessageChunks(messages, 10);
    assert.equal(chunks.length, 50);
    const t0 = performance.now();
    const files = await processMessageChunks(chunks, dir);
    const seconds = (performance.now() - t0) / 1000;
    assert.equal(files.length, 500);
    files.forEach((file, i) => assert.equal(file, path.join(dir, `0_${i}.wav`)));
    const names = await readdir(dir);
    assert.equal(names.length, 500);
    for (const i of [0, 7, 123, 499]) {
      const wav = parseWav(await readFile(files[i]!));
      assert.equal(wav.dataBytes, toneSamples(`Line number ${i}.`) * 2);
    }
    console.log(`# 500 jobs in ${seconds.toFixed(2)} s (${(500 / seconds).toFixed(0)} jobs/s)`);
  });

  test("a failing line does not stop the batch: BatchFailedError, or skip", { timeout: 30_000 }, async () => {
    const dir = path.join(out, "partial");
    const messages = [
      { text: "Good one.", id: "a" },
      { text: "Bad FAILME one.", id: "b", stream_index: 2 },
      { text: "Good two.", id: "c", streamIndex: 3 },
    ];
    await assert.rejects(processMessageChunks([messages], dir), (err: unknown) => {
      assert.ok(err instanceof BatchFailedError);
      assert.deepEqual(err.paths, [path.join(dir, "0_a.wav"), path.join(dir, "3_c.wav")]);
      assert.equal(err.failures.length, 1);
      assert.equal(err.failures[0]!.id, "b");
      assert.equal((err.failures[0]!.error as JobFailedError).remoteCode, "engine_error");
      return true;
    });
    const skipped = await processMessageChunks([messages], dir, { onError: "skip" });
    assert.deepEqual(skipped, [path.join(dir, "0_a.wav"), path.join(dir, "3_c.wav")]);
    assert.deepEqual((await readdir(dir)).sort(), ["0_a.wav", "3_c.wav"]);
  });

  test("stream: chunks in order, one per sentence, concatenated = the result", { timeout: 15_000 }, async () => {
    const text = "One. Two two. Three three three.";
    const stream = client.stream(text, { speaker: "alice" });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    const result = await stream.result;
    assert.equal(chunks.length, 3);
    assert.deepEqual(chunks.map((c) => c.index), [0, 1, 2]);
    assert.deepEqual(Buffer.concat(chunks.map((c) => c.pcm)), Buffer.from(result.audio));
    assert.equal(result.audio.byteLength, toneSamples(text) * 2);
  });

  test("an engine error rejects with JobFailedError carrying the remote code", { timeout: 15_000 }, async () => {
    await assert.rejects(client.synthesize("please FAILME now"), (err: unknown) => {
      assert.ok(err instanceof JobFailedError);
      assert.equal(err.code, "job_failed");
      assert.equal(err.remoteCode, "engine_error");
      assert.equal(err.retryable, false);
      return true;
    });
  });

  test("resubmitting a finished job id returns the retained result, not a new job", { timeout: 15_000 }, async () => {
    const first = await client.synthesize("Same job.", { jobId: "node-idem-1" });
    const second = await client.synthesize("Same job.", { jobId: "node-idem-1" });
    assert.equal(second.workerId, first.workerId);
    assert.deepEqual(Buffer.from(second.audio), Buffer.from(first.audio));
    const view = await client.jobStatus("node-idem-1");
    assert.equal(view.state, "done");
    assert.equal(view.attempt, 1);
    const fetched = await client.getResult("node-idem-1");
    assert.equal(fetched.jobId, "node-idem-1");
    assert.deepEqual(Buffer.from(fetched.audio), Buffer.from(first.audio));
    await assert.rejects(client.getResult("node-no-such-job"),
      (err: unknown) => err instanceof RequestFailedError && err.remoteCode === "not_found");
  });

  test("status, ping, jobStatus of an unknown job, healthCheck, getWorkerStatus", { timeout: 15_000 }, async () => {
    const pong = await client.ping();
    assert.equal(pong.brokerId, cluster.brokerId);
    const status = await getWorkerStatus();
    assert.equal(status.broker_id, cluster.brokerId);
    assert.equal(status.workers.length, 2);
    assert.equal(status.workers[0]!.engine, "tone");
    assert.equal(await healthCheck(), true);
    await assert.rejects(client.jobStatus("no-such-job"), (err: unknown) => err instanceof RequestFailedError && err.remoteCode === "not_found");
  });

  test("invalid requests are rejected before anything is sent", { timeout: 5_000 }, async () => {
    await assert.rejects(client.synthesize(""), { code: "invalid_argument" });
    await assert.rejects(client.synthesize("x", { jobId: "bad/id" }), { code: "invalid_argument" });
  });

  test("close is idempotent; pending and later calls reject with ClosedError", { timeout: 15_000 }, async () => {
    const own = new TtsClient({ brokerUrl: cluster.frontend });
    await own.ping();
    const pending = own.synthesize("A job that will not finish in time. ".repeat(20));
    await Promise.all([own.close(), own.close()]);
    await assert.rejects(pending, ClosedError);
    await assert.rejects(own.synthesize("x"), { code: "closed" });
    await own.close();
  });

  test("the module client is reopened after shutdownWorkerManager", { timeout: 15_000 }, async () => {
    const before = getClient();
    await shutdownWorkerManager();
    assert.ok(before.isClosed);
    const file = await generateAudio("Back again.", "default", "again", 0, path.join(out, "reopen"));
    assert.equal(path.basename(file), "0_again.wav");
    assert.notEqual(getClient(), before);
  });

  test("reloadWait reports each worker: a bad option fails the reload, the old engine keeps serving", { timeout: 60_000 }, async () => {
    const told = (await client.status()).workers.length;
    const outcomes = await client.reloadWait("tone", { capacity: "lots" }, 30_000);
    assert.equal(outcomes.length, told);
    for (const o of outcomes) {
      assert.equal(o.outcome, "failed");
      assert.match(o.error, /capacity/);
      assert.notEqual(o.newWorkerId, o.workerId);
    }
    const result = await client.synthesize("Still served.");
    assert.ok(result.numSamples > 0);
  });
});
