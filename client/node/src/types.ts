/** Public shapes of the Node client: options, results, and the broker's views as they come off the wire. */

import type { CurveOptions } from "./curve.js";
import type { JobState, Priority } from "./protocol/constants.js";

export type VoiceValue = null | boolean | number | string;

/** Something with console's warn/debug; the client logs through it. */
export interface Logger {
  warn(message: string): void;
  debug(message: string): void;
}

export interface TtsClientOptions extends CurveOptions {
  /** Broker frontend URL; default env TTS_BROKER_URL, else tcp://127.0.0.1:5555. */
  brokerUrl?: string;
  /** ZeroMQ routing id of this client's socket; default: ZeroMQ picks one. */
  routingId?: string;
  /** Time limit for status, jobStatus, ping and reload (ms). Default 5000. */
  requestTimeoutMs?: number;
  /** Client-side time limit for a job, from submission to result (ms); 0 = none. Default 300000. */
  jobTimeoutMs?: number;
  /** PING interval while work is pending (ms); a changed broker_id means the broker restarted. Default 1000. */
  pingIntervalMs?: number;
  /** Resubmit (same job id) a job the broker has said nothing about for this long (ms). Default 5000. */
  resubmitAfterMs?: number;
  /** Most retries of a job after retryable ERRORs (those with retryable=true; RETRY_POLICY.retryableCodes lists
   * today's). Default unlimited: the call's timeout bounds them (PROTOCOL.md section 9). */
  maxRetries?: number;
  /** First retry delay (ms), doubled per retry, never over retryBackoffMaxMs, up to a quarter shorter at random
   * (PROTOCOL.md section 9). Default 200. */
  retryBackoffMs?: number;
  /** Longest retry delay (ms). Default 5000. */
  retryBackoffMaxMs?: number;
  /** ZeroMQ send high-water mark (messages queued for the broker). Default 100000. */
  sendHighWaterMark?: number;
  /** Logger for warnings (malformed broker messages, resubmissions); default: warnings to console.warn. */
  logger?: Logger;
}

/** Options of one synthesis job. */
export interface SynthesizeOptions {
  /** The idempotency key; default `{jobIdPrefix}-{random hex}`. */
  jobId?: string;
  jobIdPrefix?: string;
  speaker?: string | null;
  /** Routing key `ENGINE` or `ENGINE:MODEL`; default the broker's default model. */
  model?: string | null;
  priority?: Priority;
  /** Engine settings (length_scale, seed, ...). */
  voice?: Record<string, VoiceValue>;
  /** Broker result cache: undefined/null = when the engine is deterministic, true = always, false = never. */
  cache?: boolean | null;
  /** Broker-side whole-job deadline (ms after acceptance); 0 = none. */
  deadlineMs?: number;
  /** Broker-side limit for one attempt on a worker (ms); 0 = the broker's default. */
  attemptTimeoutMs?: number;
  /** Client-side limit (ms) after which the call rejects with TimeoutError and the job is cancelled. */
  timeoutMs?: number;
  /** Aborting rejects the call with AbortError and cancels the job. */
  signal?: AbortSignal;
}

/** Options of status/ping/jobStatus/reload calls. */
export interface RequestOptions {
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** Metadata of a finished job, camelCased from the RESULT body. */
export interface ResultInfo {
  jobId: string;
  attempt: number;
  workerId: string;
  engine: string;
  model: string;
  sampleRate: number;
  channels: number;
  sampleFormat: "s16le";
  numSamples: number;
  genTimeMs: number;
  queueTimeMs: number;
  totalTimeMs: number;
  /** Served from the broker's result cache without synthesis (workerId is then "cache"). */
  cached: boolean;
}

/** A finished job: the whole utterance as raw PCM (s16le, interleaved) plus its metadata. */
export interface SynthesisResult extends ResultInfo {
  audio: Uint8Array;
  /** Length of the audio in seconds. */
  durationS: number;
}

/** One piece of a streamed job's audio, in order; concatenated they are the whole utterance. */
export interface AudioChunk {
  jobId: string;
  /** Position of this chunk in what the stream delivered, from 0. */
  index: number;
  /** The attempt that produced it (a retried job restarts on another worker). */
  attempt: number;
  pcm: Uint8Array;
  sampleRate: number;
  channels: number;
  sampleFormat: "s16le";
}

export interface PongInfo {
  brokerId: string;
  /** Broker wall clock (ms since the epoch). */
  timeMs: number;
  /** Round trip measured by this client (ms). */
  rttMs: number;
}

/** Job view (PROTOCOL.md section 6), as on the wire. */
export interface JobView {
  job_id: string;
  state: JobState;
  attempt: number;
  priority: Priority;
  model: string | null;
  worker_id: string | null;
  queued_ms: number;
  run_ms: number | null;
  error: { code: string; message: string; retryable: boolean } | null;
  /** Ids of the workers the job was leased to, in order. */
  workers: string[];
  /** When the broker accepted it (ms since the epoch). */
  accepted_at_ms: number;
  cached: boolean;
}

export interface WorkerView {
  worker_id: string;
  name: string;
  host: string;
  pid: number;
  engine: string;
  model: string;
  device: string;
  state: "idle" | "busy" | string;
  capacity: number;
  busy: number;
  jobs_done: number;
  jobs_failed: number;
  mean_gen_ms: number;
  rss_bytes: number;
  gpu_mem_bytes: number;
  load_time_ms: number;
  last_seen_ms: number;
  /** speakers whose voice data the worker holds ready (sticky routing) */
  warm: string[];
  /** the engine's own figures from its last heartbeat */
  engine_stats: Record<string, unknown>;
}

/** Status view (PROTOCOL.md section 6), as on the wire: what getWorkerStatus() returns. */
export interface StatusView {
  broker_id: string;
  version: string;
  uptime_s: number;
  draining: boolean;
  default_model: string | null;
  queue: { depth?: number; max?: number; by_priority?: Record<string, number>; [key: string]: unknown };
  jobs: { running?: number; done?: number; failed?: number; retained?: number; [key: string]: unknown };
  workers: WorkerView[];
}

/** Counters of what the client did, for monitoring and tests. */
export interface ClientStats {
  submitted: number;
  resubmitted: number;
  retried: number;
  completed: number;
  failed: number;
  brokerRestarts: number;
  malformed: number;
}

/** How one told worker did after `reloadWait` (RELOAD_REPLY `outcomes`, PROTOCOL.md section 4). */
export interface ReloadOutcome {
  workerId: string;
  name: string;
  /** reloaded; failed (it kept its old engine, `error` says why); missing (not back within the wait) */
  outcome: "reloaded" | "failed" | "missing";
  error: string;
  newWorkerId: string;
}
