/**
 * A real broker and real tone workers on random loopback ports, for the integration tests and the benchmark.
 *
 * Processes run in their own process groups and are killed by group id at the end, so a worker supervisor's
 * children go too. Their output is kept and printed when something fails to start.
 */

import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import * as path from "node:path";

import { TtsClient } from "../src/client.js";
import { REPO_DIR } from "./paths.js";

/** The Python with tts_broker and tts_worker: env TTS_PYTHON, else the repo's .venv, else python3. */
export function findPython(): string {
  const fromEnv = process.env["TTS_PYTHON"];
  if (fromEnv) return fromEnv;
  const venv = path.join(REPO_DIR, ".venv", "bin", "python");
  return existsSync(venv) ? venv : "python3";
}

/** A TCP port that was free a moment ago on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** Poll `check` every `everyMs` until it returns a value other than undefined, or throw after `timeoutMs`. */
export async function waitFor<T>(what: string, check: () => T | undefined | Promise<T | undefined>, timeoutMs = 15_000, everyMs = 25): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

const live = new Set<Managed>();
// A test runner that dies must not leave brokers and workers behind (they run in their own groups).
process.once("exit", () => {
  for (const m of live) m.signal("SIGKILL");
});

class Managed {
  readonly output: string[] = [];
  readonly exited: Promise<number | null>;

  constructor(readonly name: string, readonly child: ChildProcess) {
    const keep = (chunk: Buffer): void => {
      this.output.push(chunk.toString());
      if (this.output.length > 200) this.output.splice(0, 100);
    };
    child.stdout?.on("data", keep);
    child.stderr?.on("data", keep);
    live.add(this);
    this.exited = new Promise((resolve) =>
      child.once("exit", (code, signal) => {
        live.delete(this);
        resolve(code ?? (signal ? -1 : null));
      }),
    );
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Signal the whole process group; after graceMs, SIGKILL it. */
  async stop(signal: NodeJS.Signals = "SIGTERM", graceMs = 5000): Promise<void> {
    if (!this.running) return;
    this.signal(signal);
    const timer = setTimeout(() => this.signal("SIGKILL"), graceMs);
    await this.exited;
    clearTimeout(timer);
    this.signal("SIGKILL"); // stragglers in the group (a supervisor's children)
  }

  signal(signal: NodeJS.Signals): void {
    try {
      process.kill(-this.child.pid!, signal);
    } catch {
      // the group is gone already
    }
  }
}

export interface ClusterOptions {
  workers?: number;
  concurrency?: number;
  engineOpts?: Record<string, string | number>;
  brokerArgs?: string[];
  /** Keep the broker's journal (in this cluster's own state folder) across broker restarts. Default true. */
  journal?: boolean;
}

/** A broker plus tone workers; start() it, stop() it in `after`. */
export class Cluster {
  frontend = "";
  backend = "";
  brokerId = "";
  private broker: Managed | undefined;
  private readonly workers: Managed[] = [];
  private readonly python = findPython();
  private dir = "";
  private brokerStarts = 0;

  constructor(private readonly options: ClusterOptions = {}) {}

  async start(): Promise<this> {
    this.dir = await mkdtemp(path.join(tmpdir(), "tts-node-test-"));
    // The first broker start binds free ports and names them in its ready file; restarts bind them again.
    this.frontend = "tcp://127.0.0.1:*";
    this.backend = "tcp://127.0.0.1:*";
    await this.startBroker();
    for (let i = 0; i < (this.options.workers ?? 1); i++) this.startWorker();
    await this.waitForWorkers((this.options.workers ?? 1) * (this.options.concurrency ?? 2));
    return this;
  }

  /** Start (or restart) the broker on the same endpoints and wait for its ready file. */
  async startBroker(): Promise<void> {
    const readyFile = path.join(this.dir, `ready-${++this.brokerStarts}.json`);
    // Its own state folder: journal and result cache never land in the repo or in another test's broker.
    const args = ["-m", "tts_broker", "--frontend", this.frontend, "--backend", this.backend, "--ready-file", readyFile,
      "--state-dir", path.join(this.dir, "state"), "--heartbeat-interval-s", "0.5", "--log-level", "warning",
      ...(this.options.journal === false ? ["--no-journal"] : []), ...(this.options.brokerArgs ?? [])];
    const broker = this.spawn("broker", args);
    this.broker = broker;
    const ready = await waitFor("the broker's ready file", async () => {
      if (!broker.running) throw new Error(`broker exited at start:\n${broker.output.join("")}`);
      try {
        return JSON.parse(await readFile(readyFile, "utf8")) as { broker_id: string; frontend: string; backend: string };
      } catch {
        return undefined; // not written yet (or half-written)
      }
    });
    this.brokerId = ready.broker_id;
    this.frontend = ready.frontend;
    this.backend = ready.backend;
  }

  async stopBroker(signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    await this.broker?.stop(signal);
  }

  startWorker(extra: Record<string, string | number> = {}): void {
    const opts = { ...this.options.engineOpts, ...extra };
    const args = ["-m", "tts_worker", "--broker", this.backend, "--engine", "tone", "--concurrency",
      String(this.options.concurrency ?? 2), "--heartbeat-interval-s", "0.5", "--log-level", "warning"];
    for (const [k, v] of Object.entries(opts)) args.push("--engine-opt", `${k}=${v}`);
    this.workers.push(this.spawn(`worker${this.workers.length}`, args));
  }

  /** Wait until the broker lists at least `n` workers. */
  async waitForWorkers(n: number, timeoutMs = 30_000): Promise<void> {
    const client = new TtsClient({ brokerUrl: this.frontend, requestTimeoutMs: 1000 });
    try {
      await waitFor(`${n} workers`, async () => {
        for (const w of this.workers) if (!w.running) throw new Error(`${w.name} exited:\n${w.output.join("")}`);
        const status = await client.status().catch(() => undefined);
        return status !== undefined && status.workers.length >= n ? true : undefined;
      }, timeoutMs, 100);
    } finally {
      await client.close();
    }
  }

  /** Everything the processes printed (for failure messages). */
  logs(): string {
    return [this.broker, ...this.workers].filter((m) => m !== undefined).map((m) => `--- ${m.name}\n${m.output.join("")}`).join("\n");
  }

  async stop(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.stop("SIGTERM", 3000)));
    await this.broker?.stop("SIGTERM", 3000);
    if (this.dir) await rm(this.dir, { recursive: true, force: true });
  }

  private spawn(name: string, args: string[]): Managed {
    const child = spawn(this.python, args, {
      cwd: this.dir,
      detached: true, // own process group: stop() kills the group
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, PYTHONUNBUFFERED: "1" },
    });
    return new Managed(name, child);
  }
}
