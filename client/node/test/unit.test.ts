/** Pieces that need no broker: WAV header, atomic writes, path confinement, chunking, JobStream ordering. */

import assert from "node:assert/strict";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { after, describe, test } from "node:test";

import { Dealer, Router } from "zeromq";

import { createMessageChunks } from "../src/audioGenerator.js";
import { InvalidArgumentError } from "../src/errors.js";
import { JobStream } from "../src/jobStream.js";
import { lineJobId, makeJobId, resolveInside } from "../src/naming.js";
import { toWav, writeFileAtomic } from "../src/output.js";
import { JOB_ID_PATTERN } from "../src/protocol/constants.js";
import { SendQueue } from "../src/sendQueue.js";
import type { SynthesisResult } from "../src/types.js";
import { freePort } from "./cluster.js";
import { parseWav } from "./wavcheck.js";

describe("output files", { timeout: 10_000 }, () => {
  let dir = "";
  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test("toWav writes a valid header for stereo 22.05 kHz", () => {
    const pcm = new Uint8Array(4 * 100);
    const info = parseWav(toWav(pcm, 22_050, 2));
    assert.deepEqual(info, { sampleRate: 22_050, channels: 2, bitsPerSample: 16, dataBytes: 400 });
  });

  test("writeFileAtomic creates the folder, replaces the file and leaves no temporary file", async () => {
    dir = await mkdtemp(path.join(tmpdir(), "tts-node-unit-"));
    const file = path.join(dir, "sub", "a.wav");
    await writeFileAtomic(file, [Buffer.from("one"), Buffer.from("two")]);
    await writeFileAtomic(file, [Buffer.from("three")]);
    assert.equal(await readFile(file, "utf8"), "three");
    assert.deepEqual(await readdir(path.dirname(file)), ["a.wav"]);
  });

  test("resolveInside refuses names that leave the folder", () => {
    assert.equal(resolveInside("/tmp/out", "1_1.wav"), path.resolve("/tmp/out/1_1.wav"));
    for (const bad of ["../x.wav", "a/b.wav", "..", ".", "/etc/passwd", ""]) {
      assert.throws(() => resolveInside("/tmp/out", bad), InvalidArgumentError, bad);
    }
  });

  test("job ids are valid, unique and bounded", () => {
    const ids = new Set(Array.from({ length: 100 }, () => makeJobId()));
    assert.equal(ids.size, 100);
    const long = lineJobId("9".repeat(200), "é/".repeat(200));
    assert.match(long, JOB_ID_PATTERN);
    assert.match(lineJobId(3, "intro"), /^line-3-intro-[0-9a-f]{16}$/);
  });

  test("createMessageChunks splits in order and rejects bad sizes", () => {
    assert.deepEqual(createMessageChunks([1, 2, 3, 4, 5], 2), [[1, 2], [3, 4], [5]]);
    assert.deepEqual(createMessageChunks([], 3), []);
    assert.throws(() => createMessageChunks([1], 0), InvalidArgumentError);
  });
});

describe("JobStream", { timeout: 5_000 }, () => {
  const pcm = (...bytes: number[]): Uint8Array => Uint8Array.from(bytes);
  const result = (audio: Uint8Array, attempt = 1): SynthesisResult => ({
    jobId: "j", attempt, workerId: "w", engine: "tone", model: "tone-v1", sampleRate: 16_000, channels: 1,
    sampleFormat: "s16le", numSamples: audio.byteLength / 2, genTimeMs: 0, queueTimeMs: 0, totalTimeMs: 0, cached: false, audio, durationS: 0,
  });
  const collect = async (stream: JobStream): Promise<number[]> => {
    const out: number[] = [];
    for await (const chunk of stream) out.push(...chunk.pcm);
    return out;
  };

  test("a retried attempt's repeated chunks are skipped", async () => {
    const stream = new JobStream("j", () => assert.fail("no early exit"));
    stream.pushPartial(1, 0, pcm(1, 1), 16_000, 1);
    stream.pushPartial(1, 1, pcm(2, 2), 16_000, 1);
    stream.pushPartial(2, 0, pcm(1, 1), 16_000, 1); // worker died; attempt 2 starts over
    stream.pushPartial(2, 1, pcm(2, 2), 16_000, 1);
    stream.pushPartial(2, 2, pcm(3, 3), 16_000, 1);
    stream.pushPartial(1, 2, pcm(9, 9), 16_000, 1); // late chunk of the revoked attempt
    stream.finish(result(pcm(1, 1, 2, 2, 3, 3), 2));
    assert.deepEqual(await collect(stream), [1, 1, 2, 2, 3, 3]);
  });

  test("after a missing chunk the rest comes from the result", async () => {
    const stream = new JobStream("j", () => undefined);
    stream.pushPartial(1, 0, pcm(1, 1), 16_000, 1);
    stream.pushPartial(1, 2, pcm(3, 3), 16_000, 1); // seq 1 never came
    stream.finish(result(pcm(1, 1, 2, 2, 3, 3)));
    assert.deepEqual(await collect(stream), [1, 1, 2, 2, 3, 3]);
    assert.equal((await stream.result).audio.byteLength, 6);
  });

  test("an error ends the iteration and rejects result; leaving early calls back", async () => {
    const failing = new JobStream("j", () => undefined);
    failing.fail(new Error("boom"));
    await assert.rejects(collect(failing), /boom/);
    await assert.rejects(failing.result, /boom/);

    let exited = 0;
    const early = new JobStream("k", () => (exited += 1));
    early.pushPartial(1, 0, pcm(1, 1), 16_000, 1);
    for await (const chunk of early) {
      assert.equal(chunk.index, 0);
      break;
    }
    assert.equal(exited, 1);
  });
});

describe("SendQueue", { timeout: 10_000 }, () => {
  test("5000 concurrent sends on one socket: no EBUSY, order kept", async () => {
    const url = `tcp://127.0.0.1:${await freePort()}`;
    const router = new Router({ linger: 0 });
    await router.bind(url);
    const dealer = new Dealer({ linger: 0, sendHighWaterMark: 100 }); // a small HWM makes sends wait
    dealer.connect(url);
    try {
      const queue = new SendQueue(dealer);
      const sent = Promise.all(Array.from({ length: 5000 }, (_, i) => queue.send([Buffer.from(String(i))])));
      for (let i = 0; i < 5000; i++) {
        const [, body] = await router.receive();
        assert.equal(body!.toString(), String(i));
      }
      await sent;
      assert.equal(queue.length, 0);
    } finally {
      dealer.close();
      router.close();
    }
  });
});
