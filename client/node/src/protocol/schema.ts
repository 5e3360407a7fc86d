/**
 * Body schemas: one per command, in wire key order (PROTOCOL.md sections 3, 4 and 6).
 *
 * Mirrors protocol/tts_protocol/messages.py: the same keys, order, defaults and constraints. Validation is
 * strict (a peer never gets "1" where it expects 1) and unknown keys are ignored for forward compatibility.
 */

import { Command, JOB_ID_PATTERN, JOB_STATES, MAX_TEXT_CHARS, PRIORITIES, SAMPLE_FORMAT } from "./constants.js";

export type FieldSpec =
  | ({ kind: "str"; minLen?: number; maxLen?: number; pattern?: RegExp } & Common)
  | ({ kind: "int"; min?: number; max?: number } & Common)
  | ({ kind: "float" } & Common)
  | ({ kind: "bool" } & Common)
  | ({ kind: "enum"; values: readonly string[] } & Common)
  /** map str -> nil/bool/int/float/str: engine voice settings and reload options */
  | ({ kind: "settings" } & Common)
  /** map str -> anything (status counters, heartbeat stats) */
  | ({ kind: "map"; maxEntries?: number } & Common)
  | ({ kind: "object"; schema: Schema } & Common)
  | ({ kind: "list"; item: Schema; maxEntries?: number } & Common)
  | ({ kind: "strList"; maxLen?: number; maxEntries?: number } & Common);

interface Common {
  nullable?: boolean;
  /** present = the key is optional and takes this value (a function makes a fresh one) when missing */
  default?: unknown;
}

export type Schema = readonly (readonly [string, FieldSpec])[];

const SHORT = 256;
const jobId: FieldSpec = { kind: "str", pattern: JOB_ID_PATTERN };
const reqId: FieldSpec = { kind: "str", minLen: 1, maxLen: 128 };
const short: FieldSpec = { kind: "str", maxLen: SHORT };
const optShort: FieldSpec = { kind: "str", maxLen: SHORT, nullable: true, default: null };
const nonNeg = (dflt?: number): FieldSpec => (dflt === undefined ? { kind: "int", min: 0 } : { kind: "int", min: 0, default: dflt });
const attempt: FieldSpec = { kind: "int", min: 1 };
const sampleRate: FieldSpec = { kind: "int", min: 1, max: 384_000 };
const channels: FieldSpec = { kind: "int", min: 1, max: 8, default: 1 };
const sampleFormat: FieldSpec = { kind: "str", pattern: new RegExp(`^${SAMPLE_FORMAT}$`), default: SAMPLE_FORMAT };
const text: FieldSpec = { kind: "str", minLen: 1, maxLen: MAX_TEXT_CHARS };
const settings: FieldSpec = { kind: "settings", default: () => ({}) };
const message: FieldSpec = { kind: "str", maxLen: 4096, default: "" };
const reason: FieldSpec = { kind: "str", maxLen: 1024, default: "" };
const laxStr = (dflt?: string): FieldSpec => (dflt === undefined ? { kind: "str" } : { kind: "str", default: dflt });

const SUBMIT: Schema = [
  ["job_id", jobId],
  ["text", text],
  ["speaker", optShort],
  ["model", optShort],
  ["priority", { kind: "enum", values: PRIORITIES, default: "normal" }],
  ["deadline_ms", nonNeg(0)],
  ["timeout_ms", nonNeg(0)],
  ["stream", { kind: "bool", default: false }],
  ["voice", settings],
  ["cache", { kind: "bool", nullable: true, default: null }],
];

const PARTIAL: Schema = [
  ["job_id", jobId],
  ["attempt", attempt],
  ["seq", nonNeg()],
  ["sample_rate", sampleRate],
  ["channels", channels],
  ["sample_format", sampleFormat],
];

const ERROR_INFO: Schema = [
  ["code", short],
  ["message", { kind: "str", default: "" }],
  ["retryable", { kind: "bool", default: false }],
];

const JOB_VIEW: Schema = [
  ["job_id", jobId],
  ["state", { kind: "enum", values: JOB_STATES }],
  ["attempt", nonNeg()],
  ["priority", { kind: "enum", values: PRIORITIES }],
  ["model", optShort],
  ["worker_id", optShort],
  ["queued_ms", nonNeg(0)],
  ["run_ms", { kind: "int", min: 0, nullable: true, default: null }],
  ["error", { kind: "object", schema: ERROR_INFO, nullable: true, default: null }],
  ["workers", { kind: "strList", maxLen: SHORT, maxEntries: 1024, default: () => [] }],
  ["accepted_at_ms", nonNeg(0)],
  ["cached", { kind: "bool", default: false }],
];

const WORKER_VIEW: Schema = [
  ["worker_id", laxStr()],
  ["name", laxStr("")],
  ["host", laxStr("")],
  ["pid", { kind: "int", default: 0 }],
  ["engine", laxStr("")],
  ["model", laxStr("")],
  ["device", laxStr("")],
  ["state", laxStr("idle")],
  ["capacity", { kind: "int", default: 1 }],
  ["busy", { kind: "int", default: 0 }],
  ["jobs_done", { kind: "int", default: 0 }],
  ["jobs_failed", { kind: "int", default: 0 }],
  ["mean_gen_ms", { kind: "float", default: 0 }],
  ["rss_bytes", { kind: "int", default: 0 }],
  ["gpu_mem_bytes", { kind: "int", default: 0 }],
  ["load_time_ms", { kind: "int", default: 0 }],
  ["last_seen_ms", { kind: "int", default: 0 }],
  ["warm", { kind: "strList", default: () => [] }],
  ["engine_stats", { kind: "map", default: () => ({}) }],
  ["supervisor", { kind: "map", default: () => ({}) }],
];

const RELOAD_OUTCOME: Schema = [
  ["worker_id", short],
  ["name", { ...short, default: "" }],
  ["outcome", { kind: "enum", values: ["reloaded", "failed", "missing"] }],
  ["error", { kind: "str", maxLen: 1024, default: "" }],
  ["new_worker_id", { ...short, default: "" }],
];

const LEASE_REF: Schema = [
  ["job_id", jobId],
  ["attempt", attempt],
];

const STATUS_VIEW: Schema = [
  ["broker_id", laxStr()],
  ["version", laxStr()],
  ["uptime_s", { kind: "float" }],
  ["draining", { kind: "bool", default: false }],
  ["default_model", { kind: "str", nullable: true, default: null }],
  ["queue", { kind: "map", default: () => ({}) }],
  ["jobs", { kind: "map", default: () => ({}) }],
  ["workers", { kind: "list", item: WORKER_VIEW, default: () => [] }],
  ["paused", { kind: "strList", default: () => [] }],
  ["dashboard", { kind: "str", nullable: true, default: null }],
  ["worker_count", { kind: "int", default: 0 }],
  ["workers_offset", { kind: "int", default: 0 }],
  ["summary", { kind: "map", default: () => ({}) }],
];

const RESULT: Schema = [
  ["job_id", jobId],
  ["attempt", attempt],
  ["worker_id", short],
  ["engine", short],
  ["model", short],
  ["sample_rate", sampleRate],
  ["channels", channels],
  ["sample_format", sampleFormat],
  ["num_samples", nonNeg(0)],
  ["gen_time_ms", nonNeg(0)],
  ["queue_time_ms", nonNeg(0)],
  ["total_time_ms", nonNeg(0)],
  ["cached", { kind: "bool", default: false }],
];

const DISCONNECT: Schema = [["reason", reason]];

/** The body schema of every command, by command byte. */
export const BODY_SCHEMAS: ReadonlyMap<number, Schema> = new Map<number, Schema>([
  [Command.SUBMIT, SUBMIT],
  [Command.CANCEL, [["job_id", jobId]]],
  [Command.JOB_STATUS, [["req_id", reqId], ["job_id", jobId]]],
  [
    Command.BROKER_STATUS,
    [
      ["req_id", reqId],
      ["workers_offset", { kind: "int", min: 0, max: 2 ** 31, default: 0 }],
      ["workers_limit", { kind: "int", min: 0, max: 10_000, nullable: true, default: null }],
      ["worker_prefix", optShort],
    ],
  ],
  [Command.PING, [["req_id", reqId]]],
  [
    Command.RELOAD,
    [
      ["req_id", reqId],
      ["model", optShort],
      ["options", settings],
      ["wait_ms", { kind: "int", min: 0, max: 3_600_000, default: 0 }],
    ],
  ],
  [
    Command.JOBS,
    [
      ["req_id", reqId],
      ["state", { kind: "enum", values: JOB_STATES, nullable: true, default: null }],
      ["limit", { kind: "int", min: 1, max: 10_000, default: 50 }],
    ],
  ],
  [Command.RETRY, [["req_id", reqId], ["job_id", jobId]]],
  [Command.DRAIN_WORKER, [["req_id", reqId], ["worker", optShort], ["host", optShort]]],
  [Command.PAUSE_MODEL, [["req_id", reqId], ["model", { kind: "str", minLen: 1, maxLen: SHORT }]]],
  [Command.RESUME_MODEL, [["req_id", reqId], ["model", { kind: "str", minLen: 1, maxLen: SHORT }]]],
  [Command.GET_RESULT, [["req_id", reqId], ["job_id", jobId]]],
  [
    Command.ACCEPTED,
    [
      ["job_id", jobId],
      ["state", { kind: "enum", values: JOB_STATES }],
      ["queue_depth", nonNeg()],
      ["duplicate", { kind: "bool", default: false }],
    ],
  ],
  [Command.PARTIAL, PARTIAL],
  [Command.RESULT, RESULT],
  [
    Command.ERROR,
    [
      ["job_id", optShort],
      ["req_id", optShort],
      ["code", short],
      ["message", message],
      ["retryable", { kind: "bool", default: false }],
    ],
  ],
  [Command.JOB_STATUS_REPLY, [["req_id", reqId], ["job", { kind: "object", schema: JOB_VIEW }]]],
  [Command.BROKER_STATUS_REPLY, [["req_id", reqId], ["status", { kind: "object", schema: STATUS_VIEW }]]],
  [Command.PONG, [["req_id", reqId], ["broker_id", short], ["time_ms", nonNeg()]]],
  [
    Command.RELOAD_REPLY,
    [
      ["req_id", reqId],
      ["workers", nonNeg()],
      ["waited", { kind: "bool", default: false }],
      ["outcomes", { kind: "list", item: RELOAD_OUTCOME, maxEntries: 4096, default: () => [] }],
    ],
  ],
  [Command.JOBS_REPLY, [["req_id", reqId], ["jobs", { kind: "list", item: JOB_VIEW, default: () => [] }]]],
  [Command.RESULT_REPLY, [["req_id", reqId], ["result", { kind: "object", schema: RESULT }]]],
  [
    Command.ADMIN_REPLY,
    [
      ["req_id", reqId],
      ["workers", { kind: "strList", maxLen: SHORT, maxEntries: 4096, default: () => [] }],
      ["paused", { kind: "strList", maxLen: SHORT, maxEntries: 4096, default: () => [] }],
    ],
  ],
  [
    Command.W_READY,
    [
      ["worker_id", short],
      ["name", { ...short, default: "" }],
      ["host", { ...short, default: "" }],
      ["pid", nonNeg(0)],
      ["engine", short],
      ["model", { ...short, default: "" }],
      ["capacity", { kind: "int", min: 1, max: 1024, default: 1 }],
      ["device", { ...short, default: "cpu" }],
      ["sample_rate", nonNeg(0)],
      ["licence", { ...short, default: "" }],
      ["load_time_ms", nonNeg(0)],
      ["reload_error", { kind: "str", maxLen: 1024, default: "" }],
      ["running", { kind: "list", item: LEASE_REF, maxEntries: 1024, default: () => [] }],
    ],
  ],
  [
    Command.W_HEARTBEAT,
    [
      ["stats", { kind: "map", maxEntries: 64, default: () => ({}) }],
      ["capacity", { kind: "int", min: 0, max: 1024, nullable: true, default: null }],
    ],
  ],
  [Command.W_PARTIAL, PARTIAL],
  [
    Command.W_RESULT,
    [
      ["job_id", jobId],
      ["attempt", attempt],
      ["sample_rate", sampleRate],
      ["channels", channels],
      ["sample_format", sampleFormat],
      ["gen_time_ms", nonNeg(0)],
      ["deterministic", { kind: "bool", default: false }],
    ],
  ],
  [
    Command.W_FAIL,
    [
      ["job_id", jobId],
      ["attempt", attempt],
      ["code", short],
      ["message", message],
      ["retryable", { kind: "bool", default: false }],
    ],
  ],
  [Command.W_DISCONNECT, DISCONNECT],
  [
    Command.B_JOB,
    [
      ["job_id", jobId],
      ["attempt", attempt],
      ["text", text],
      ["speaker", optShort],
      ["model", optShort],
      ["voice", settings],
      ["stream", { kind: "bool", default: false }],
      ["timeout_ms", nonNeg(0)],
    ],
  ],
  [Command.B_CANCEL, [["job_id", jobId], ["attempt", attempt], ["reason", reason]]],
  [Command.B_HEARTBEAT, []],
  [Command.B_DISCONNECT, DISCONNECT],
  [Command.B_RELOAD, [["options", settings]]],
]);

/** Thrown by normalize(); the codec wraps it in a ProtocolError or InvalidArgumentError. */
export class SchemaError extends Error {}

/**
 * A new object holding exactly the schema's keys, in wire order, with defaults filled in.
 * Throws SchemaError naming the first bad field.
 */
export function normalize(schema: Schema, input: Record<string, unknown>, path = ""): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, spec] of schema) {
    let value = Object.hasOwn(input, key) ? input[key] : undefined;
    if (value === undefined) {
      if (!("default" in spec)) throw new SchemaError(`${path}${key}: field required`);
      value = typeof spec.default === "function" ? (spec.default as () => unknown)() : spec.default;
    }
    out[key] = check(spec, value, `${path}${key}`);
  }
  return out;
}

function check(spec: FieldSpec, value: unknown, where: string): unknown {
  if (value === null) {
    if (spec.nullable) return null;
    throw new SchemaError(`${where}: must not be null`);
  }
  switch (spec.kind) {
    case "str":
      if (typeof value !== "string") throw new SchemaError(`${where}: expected a string`);
      if (spec.minLen !== undefined && value.length < spec.minLen) throw new SchemaError(`${where}: too short`);
      // Lengths count code points, as Python does; UTF-16 length is an upper bound, so count only when needed.
      if (spec.maxLen !== undefined && value.length > spec.maxLen && codePoints(value) > spec.maxLen) {
        throw new SchemaError(`${where}: longer than ${spec.maxLen} characters`);
      }
      if (spec.pattern && !spec.pattern.test(value)) throw new SchemaError(`${where}: does not match ${spec.pattern}`);
      return value;
    case "int":
      if (typeof value !== "number" || !Number.isInteger(value)) throw new SchemaError(`${where}: expected an integer`);
      if (spec.min !== undefined && value < spec.min) throw new SchemaError(`${where}: must be >= ${spec.min}`);
      if (spec.max !== undefined && value > spec.max) throw new SchemaError(`${where}: must be <= ${spec.max}`);
      return value;
    case "float":
      if (typeof value !== "number") throw new SchemaError(`${where}: expected a number`);
      return value;
    case "bool":
      if (typeof value !== "boolean") throw new SchemaError(`${where}: expected a boolean`);
      return value;
    case "enum":
      if (typeof value !== "string" || !spec.values.includes(value)) {
        throw new SchemaError(`${where}: expected one of ${spec.values.join(", ")}`);
      }
      return value;
    case "settings":
      return checkSettings(value, where);
    case "map": {
      const map = asPlainObject(value, where);
      if (spec.maxEntries !== undefined && Object.keys(map).length > spec.maxEntries) {
        throw new SchemaError(`${where}: more than ${spec.maxEntries} entries`);
      }
      return map;
    }
    case "object":
      return normalize(spec.schema, asPlainObject(value, where), `${where}.`);
    case "list":
      if (!Array.isArray(value)) throw new SchemaError(`${where}: expected a list`);
      if (spec.maxEntries !== undefined && value.length > spec.maxEntries) throw new SchemaError(`${where}: more than ${spec.maxEntries} entries`);
      return value.map((item, i) => normalize(spec.item, asPlainObject(item, `${where}.${i}`), `${where}.${i}.`));
    case "strList":
      if (!Array.isArray(value)) throw new SchemaError(`${where}: expected a list`);
      if (spec.maxEntries !== undefined && value.length > spec.maxEntries) throw new SchemaError(`${where}: more than ${spec.maxEntries} entries`);
      return value.map((item, i) => check({ kind: "str", ...(spec.maxLen === undefined ? {} : { maxLen: spec.maxLen }) }, item, `${where}.${i}`));
  }
}

function checkSettings(value: unknown, where: string): Record<string, unknown> {
  const map = asPlainObject(value, where);
  const keys = Object.keys(map);
  if (keys.length > 64) throw new SchemaError(`${where}: more than 64 entries`);
  for (const key of keys) {
    const v = map[key];
    if (codePoints(key) > 64) throw new SchemaError(`${where}: key longer than 64 characters`);
    const ok =
      v === null ||
      typeof v === "boolean" ||
      (typeof v === "number" && Number.isFinite(v)) ||
      (typeof v === "string" && (v.length <= 4096 || codePoints(v) <= 4096));
    if (!ok) throw new SchemaError(`${where}.${key}: expected null, boolean, number or string (<= 4096 characters)`);
  }
  return map;
}

function asPlainObject(value: unknown, where: string): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value) || ArrayBuffer.isView(value)) {
    throw new SchemaError(`${where}: expected a map`);
  }
  return value as Record<string, unknown>;
}

function codePoints(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) i++;
    }
    n++;
  }
  return n;
}

/** True when encoding must force float64 somewhere below this schema (a JS number cannot say so). */
export function hasFloatField(schema: Schema): boolean {
  return schema.some(([, spec]) =>
    spec.kind === "float" ||
    (spec.kind === "object" && hasFloatField(spec.schema)) ||
    (spec.kind === "list" && hasFloatField(spec.item)),
  );
}
