/**
 * The retry policy (PROTOCOL.md section 9): constants against protocol/retry_policy.json, and every case of
 * protocol/vectors/client_cases.json run against a real ROUTER socket that this test scripts.
 * tests/client/test_retry_policy.py runs the same cases against the Python client.
 */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import * as path from "node:path";
import { describe, test } from "node:test";

import { Router } from "zeromq";

import { TtsClient } from "../src/client.js";
import { JobFailedError, TimeoutError } from "../src/errors.js";
import type { JobStream } from "../src/jobStream.js";
import { decodeMessage, encodeMessage, type Message } from "../src/protocol/codec.js";
import { CLIENT_HEADER, Command } from "../src/protocol/constants.js";
import { backoffDelayMs, RETRY_POLICY } from "../src/retryPolicy.js";
import type { SynthesisResult } from "../src/types.js";
import { waitFor } from "./cluster.js";
import { REPO_DIR, VECTORS_DIR } from "./paths.js";

type Step = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any -- JSON steps
interface Case {
  name: string;
  client?: Record<string, number>;
  steps: Step[];
}
interface Cases {
  defaults: { client: Record<string, number> };
  tolerance_s: { early: number; late: number };
  cases: Case[];
}

const POLICY = JSON.parse(readFileSync(path.join(REPO_DIR, "protocol", "retry_policy.json"), "utf8"));
const CASES = JSON.parse(readFileSync(path.join(VECTORS_DIR, "client_cases.json"), "utf8")) as Cases;
const EARLY_MS = CASES.tolerance_s.early * 1000;
const LATE_MS = CASES.tolerance_s.late * 1000;
const quiet = { warn: () => undefined, debug: () => undefined };
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const chunkPcm = (k: number): Uint8Array => Buffer.from(Array.from({ length: 8 }, () => [k + 1, 0]).flat());

describe("retry policy constants", { timeout: 5_000 }, () => {
  test("match protocol/retry_policy.json", () => {
    const b = POLICY.backoff;
    assert.equal(RETRY_POLICY.backoffInitialMs, b.initial_s * 1000);
    assert.equal(RETRY_POLICY.backoffFactor, b.factor);
    assert.equal(RETRY_POLICY.backoffCapMs, b.cap_s * 1000);
    assert.equal(RETRY_POLICY.backoffJitterFraction, b.jitter_fraction);
    assert.equal(RETRY_POLICY.maxRetries, POLICY.max_retries ?? Infinity);
    assert.equal(RETRY_POLICY.resubmitAfterMs, POLICY.resubmit_after_s * 1000);
    assert.equal(RETRY_POLICY.pingIntervalMs, POLICY.ping_interval_s * 1000);
    assert.equal(RETRY_POLICY.brokerLostPings, POLICY.broker_lost_pings);
    assert.deepEqual([...RETRY_POLICY.retryableCodes], POLICY.retryable_codes);
  });

  test("backoffDelayMs follows the formula and grows until the cap", () => {
    const b = POLICY.backoff;
    let longestBefore = 0;
    for (let n = 0; n < 12; n++) {
      const ceiling = Math.min(b.cap_s * 1000, b.initial_s * 1000 * b.factor ** n);
      const low = backoffDelayMs(n, undefined, undefined, () => 1); // the infimum: u < 1
      const high = backoffDelayMs(n, undefined, undefined, () => 0);
      assert.ok(Math.abs(high - ceiling) < 1e-9, `n=${n}: ${high} vs ${ceiling}`);
      assert.ok(Math.abs(low - ceiling * (1 - b.jitter_fraction)) < 1e-9, `n=${n}: ${low}`);
      if (ceiling < b.cap_s * 1000) assert.ok(low > longestBefore, "each wait is longer than any before it");
      longestBefore = high;
      for (let i = 0; i < 50; i++) {
        const d = backoffDelayMs(n);
        assert.ok(d >= low && d <= high);
      }
    }
    assert.ok(backoffDelayMs(10_000) <= b.cap_s * 1000);
  });
});

/** A ROUTER that answers PING itself (while answerPings), notes RETRYs, and queues everything else. */
class ScriptedRouter {
  readonly router = new Router({ linger: 0 });
  url = "";
  brokerId = "b-one";
  answerPings = true;
  pingsAnswered = 0;
  readonly retried = new Set<string>();
  readonly backlog: { at: number; msg: Message }[] = [];
  private identity: Uint8Array | undefined;
  private wake: (() => void) | undefined;
  private loop: Promise<void> | undefined;

  async start(): Promise<this> {
    await this.router.bind("tcp://127.0.0.1:0");
    this.url = this.router.lastEndpoint!;
    this.loop = this.receive();
    return this;
  }

  private async receive(): Promise<void> {
    for (;;) {
      let identity: Uint8Array;
      let frames: Uint8Array[];
      try {
        [identity, ...frames] = (await this.router.receive()) as unknown as [Uint8Array, ...Uint8Array[]];
      } catch {
        return; // closed
      }
      this.identity = identity;
      const msg = decodeMessage(frames, CLIENT_HEADER, true);
      if (msg.command === Command.PING) {
        if (this.answerPings) {
          this.pingsAnswered += 1;
          try {
            await this.send(Command.PONG, { req_id: msg.body["req_id"], broker_id: this.brokerId, time_ms: 1 });
          } catch (err) {
            if (this.router.closed) return; // the case ended while a PONG was on its way
            throw err;
          }
        }
      } else if (msg.command === Command.RETRY) {
        this.retried.add(msg.body["job_id"] as string);
      } else {
        this.backlog.push({ at: performance.now(), msg });
        this.wake?.();
      }
    }
  }

  async next(timeoutMs = 5000): Promise<{ at: number; msg: Message }> {
    const deadline = performance.now() + timeoutMs;
    while (this.backlog.length === 0) {
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`nothing from the client within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = undefined;
    }
    return this.backlog.shift()!;
  }

  send(command: number, body: Record<string, unknown>, payload?: Uint8Array): Promise<void> {
    assert.ok(this.identity !== undefined, "the client has not spoken yet");
    return this.router.send([this.identity, ...encodeMessage(command, body, payload)]);
  }

  async close(): Promise<void> {
    this.router.close();
    await this.loop;
  }
}

interface Job {
  submittedAt: number;
  settledAt?: number;
  result?: SynthesisResult;
  error?: Error;
  chunks?: Uint8Array[];
  done: Promise<void>;
}

class CaseRunner {
  private mark = performance.now();
  private readonly jobs = new Map<string, Job>();

  constructor(private readonly broker: ScriptedRouter, private readonly client: TtsClient) {}

  async run(steps: Step[]): Promise<void> {
    for (const [i, step] of steps.entries()) {
      try {
        await (this as unknown as Record<string, (s: Step) => Promise<void> | void>)[step["op"]]!(step);
      } catch (err) {
        throw new Error(`step ${i} ${JSON.stringify(step)}: ${(err as Error).message}`, { cause: err });
      }
      this.mark = performance.now();
    }
  }

  private checkBounds(what: string, tookMs: number, bounds: [number, number] | undefined): void {
    if (bounds === undefined) return;
    const [low, high] = bounds;
    assert.ok(low * 1000 - EARLY_MS <= tookMs && tookMs <= high * 1000 + LATE_MS, `${what} took ${tookMs.toFixed(1)} ms, expected ${JSON.stringify(bounds)} s`);
  }

  submit(step: Step): void {
    const jobId = step["job"] as string;
    const options = { jobId, timeoutMs: step["timeout_s"] * 1000 };
    const job: Partial<Job> = { submittedAt: performance.now() };
    const settle = (outcome: SynthesisResult | Error): void => {
      job.settledAt = performance.now();
      if (outcome instanceof Error) job.error = outcome;
      else job.result = outcome;
    };
    if (step["stream"]) {
      const stream: JobStream = this.client.stream(`text of ${jobId}`, options);
      const chunks: Uint8Array[] = [];
      const iterated = (async () => {
        for await (const chunk of stream) chunks.push(chunk.pcm);
        job.chunks = chunks;
      })().catch(() => undefined);
      job.done = Promise.all([stream.result.then(settle, settle), iterated]).then(() => undefined);
    } else {
      job.done = this.client.synthesize(`text of ${jobId}`, options).then(settle, settle);
    }
    this.jobs.set(jobId, job as Job);
  }

  async expect_submit(step: Step): Promise<void> {
    const { at, msg } = await this.broker.next();
    assert.ok(msg.command === Command.SUBMIT && msg.body["job_id"] === step["job"], `got ${msg.name} ${JSON.stringify(msg.body)}`);
    const retried = this.broker.retried.delete(step["job"]);
    this.checkBounds("the SUBMIT", at - this.mark, step["delay_s"]);
    if ("retry_first" in step) assert.equal(retried, step["retry_first"], "RETRY before the SUBMIT");
  }

  async expect_cancel(step: Step): Promise<void> {
    const { msg } = await this.broker.next();
    assert.ok(msg.command === Command.CANCEL && msg.body["job_id"] === step["job"], `got ${msg.name} ${JSON.stringify(msg.body)}`);
  }

  async expect_quiet(step: Step): Promise<void> {
    await sleep(step["for_s"] * 1000); // the point is that nothing happens for this long
    assert.deepEqual(this.broker.backlog.map((m) => m.msg.name), [], "unexpected messages");
    assert.deepEqual([...this.broker.retried], [], "unexpected RETRY");
  }

  async send(step: Step): Promise<void> {
    const jobId = step["job"] as string;
    switch (step["command"]) {
      case "ACCEPTED":
        return this.broker.send(Command.ACCEPTED, { job_id: jobId, state: "queued", queue_depth: 0, duplicate: false });
      case "ERROR":
        return this.broker.send(Command.ERROR, { job_id: jobId, req_id: null, code: step["code"], message: step["message"] ?? "", retryable: step["retryable"] });
      case "PARTIAL":
        return this.broker.send(Command.PARTIAL, { job_id: jobId, attempt: 1, seq: step["seq"], sample_rate: 16000, channels: 1, sample_format: "s16le" }, chunkPcm(step["seq"]));
      default: {
        const pcm = Buffer.concat(Array.from({ length: step["chunks"] ?? 1 }, (_, k) => chunkPcm(k)));
        return this.broker.send(Command.RESULT, {
          job_id: jobId, attempt: 1, worker_id: "w-x", engine: "tone", model: "m", sample_rate: 16000, channels: 1,
          sample_format: "s16le", num_samples: pcm.byteLength / 2, gen_time_ms: 0, queue_time_ms: 0, total_time_ms: 0, cached: false,
        }, pcm);
      }
    }
  }

  async answer_pings(step: Step): Promise<void> {
    const target = this.broker.pingsAnswered + step["count"];
    await waitFor("the client's pings", () => (this.broker.pingsAnswered >= target ? true : undefined), 5000, 10);
  }

  pings(step: Step): void {
    this.broker.answerPings = step["answer"];
  }

  set_broker_id(step: Step): void {
    this.broker.brokerId = step["broker_id"];
  }

  async reject_submits(step: Step): Promise<void> {
    let count = 0;
    const deadline = performance.now() + step["for_s"] * 1000;
    for (let left = step["for_s"] * 1000; left > 0; left = deadline - performance.now()) {
      let next;
      try {
        next = await this.broker.next(left);
      } catch {
        break; // nothing more within the time: done
      }
      assert.ok(next.msg.command === Command.SUBMIT && next.msg.body["job_id"] === step["job"], `got ${next.msg.name}`);
      count += 1;
      await this.broker.send(Command.ERROR, { job_id: step["job"], req_id: null, code: step["code"], message: "", retryable: true });
    }
    assert.ok(count >= step["min_count"], `only ${count} SUBMITs`);
  }

  async expect_outcome(step: Step): Promise<void> {
    const job = this.jobs.get(step["job"])!;
    await Promise.race([job.done, sleep(10_000).then(() => assert.fail("the call did not end"))]);
    this.checkBounds("the call", job.settledAt! - job.submittedAt, step["elapsed_s"]);
    if (step["outcome"] === "result") {
      assert.ok(job.error === undefined, `failed with ${String(job.error)}`);
      if (step["chunks"] !== undefined) {
        assert.equal(job.chunks?.length, step["chunks"]);
        assert.deepEqual(Buffer.concat(job.chunks!), Buffer.from(job.result!.audio));
      }
    } else if (step["outcome"] === "timeout") {
      assert.ok(job.error instanceof TimeoutError, `ended with ${String(job.error)}`);
    } else {
      assert.ok(job.error instanceof JobFailedError, `ended with ${String(job.error)}`);
      assert.equal(job.error.remoteCode, step["code"]);
      assert.equal(job.error.retryable, step["retryable"]);
    }
  }
}

describe("scripted-broker cases (protocol/vectors/client_cases.json)", { timeout: 120_000 }, () => {
  for (const c of CASES.cases) {
    test(c.name, { timeout: 30_000 }, async () => {
      const conf = { ...CASES.defaults.client, ...c.client };
      const broker = await new ScriptedRouter().start();
      const client = new TtsClient({
        brokerUrl: broker.url, jobTimeoutMs: 60_000, requestTimeoutMs: 5000, logger: quiet,
        pingIntervalMs: conf["ping_interval_s"]! * 1000, resubmitAfterMs: conf["resubmit_after_s"]! * 1000,
        retryBackoffMs: conf["backoff_initial_s"]! * 1000, retryBackoffMaxMs: conf["backoff_cap_s"]! * 1000,
      });
      try {
        await new CaseRunner(broker, client).run(c.steps);
      } finally {
        await client.close();
        await broker.close();
      }
    });
  }
});
