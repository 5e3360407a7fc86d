/** TTSP/2 constants: headers, command bytes, priorities, states and error codes (PROTOCOL.md 2-3). */

export const PROTOCOL_VERSION = 2;
export const CLIENT_HEADER = "TTSC2";
export const WORKER_HEADER = "TTSW2";
export const DEFAULT_FRONTEND = "tcp://127.0.0.1:5555";
export const SAMPLE_FORMAT = "s16le";
export const BYTES_PER_SAMPLE = 2;

/** Which pair of peers a message travels between; the value starts frame 0 (the command byte follows). */
export type Side = typeof CLIENT_HEADER | typeof WORKER_HEADER;

/** One-byte command codes; the high nibble tells the direction. */
export const Command = {
  // client -> broker
  SUBMIT: 0x01,
  CANCEL: 0x02,
  JOB_STATUS: 0x03,
  BROKER_STATUS: 0x04,
  PING: 0x05,
  RELOAD: 0x06,
  JOBS: 0x07,
  RETRY: 0x08,
  DRAIN_WORKER: 0x09,
  PAUSE_MODEL: 0x0a,
  RESUME_MODEL: 0x0b,
  GET_RESULT: 0x0c,
  // broker -> client
  ACCEPTED: 0x11,
  PARTIAL: 0x12,
  RESULT: 0x13,
  ERROR: 0x14,
  JOB_STATUS_REPLY: 0x15,
  BROKER_STATUS_REPLY: 0x16,
  PONG: 0x17,
  RELOAD_REPLY: 0x18,
  JOBS_REPLY: 0x19,
  ADMIN_REPLY: 0x1a,
  RESULT_REPLY: 0x1c,
  // worker -> broker
  W_READY: 0x21,
  W_HEARTBEAT: 0x22,
  W_PARTIAL: 0x23,
  W_RESULT: 0x24,
  W_FAIL: 0x25,
  W_DISCONNECT: 0x26,
  // broker -> worker
  B_JOB: 0x31,
  B_CANCEL: 0x32,
  B_HEARTBEAT: 0x33,
  B_DISCONNECT: 0x34,
  B_RELOAD: 0x35,
} as const;

export type CommandName = keyof typeof Command;
export type CommandByte = (typeof Command)[CommandName];

const NAMES = new Map<number, CommandName>(
  (Object.entries(Command) as [CommandName, number][]).map(([name, byte]) => [byte, name]),
);

/** The command's name for a byte, or undefined for a byte TTSP/2 does not define. */
export function commandName(byte: number): CommandName | undefined {
  return NAMES.get(byte);
}

export function commandSide(byte: number): Side {
  return byte < 0x20 ? CLIENT_HEADER : WORKER_HEADER;
}

export function commandToBroker(byte: number): boolean {
  const nibble = byte >> 4;
  return nibble === 0x0 || nibble === 0x2;
}

/** Commands that carry a raw PCM payload frame. */
export const PAYLOAD_COMMANDS: ReadonlySet<number> = new Set([
  Command.PARTIAL,
  Command.RESULT,
  Command.RESULT_REPLY,
  Command.W_PARTIAL,
  Command.W_RESULT,
]);

export const PRIORITIES = ["high", "normal", "low"] as const;
export type Priority = (typeof PRIORITIES)[number];

export const JOB_STATES = ["queued", "running", "done", "failed", "cancelled"] as const;
export type JobState = (typeof JOB_STATES)[number];

/** Machine-readable error codes the broker sends in ERROR bodies. */
export const ErrorCode = {
  PROTOCOL: "protocol",
  BAD_REQUEST: "bad_request",
  QUEUE_FULL: "queue_full",
  SHUTTING_DOWN: "shutting_down",
  NO_WORKERS: "no_workers",
  CANCELLED: "cancelled",
  DEADLINE_EXCEEDED: "deadline_exceeded",
  MAX_ATTEMPTS: "max_attempts",
  ENGINE_ERROR: "engine_error",
  NOT_FOUND: "not_found",
  FORBIDDEN: "forbidden",
  INTERNAL: "internal",
  OUT_OF_RANGE: "out_of_range",
  TOO_LARGE: "too_large",
  CONFLICT: "conflict",
  TOO_MANY_JOBS: "too_many_jobs",
  JOURNAL_UNAVAILABLE: "journal_unavailable",
  NO_AUDIO: "no_audio",
} as const;
export type RemoteErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export const JOB_ID_PATTERN = /^[A-Za-z0-9._:-]{1,128}$/;
export const MAX_TEXT_CHARS = 1_000_000;
