"use strict";
/** TTSP/2 constants: headers, command bytes, priorities, states and error codes (PROTOCOL.md 2-3). */
Object.defineProperty(exports, "__esModule", { value: true });
exports.MAX_TEXT_CHARS = exports.JOB_ID_PATTERN = exports.ErrorCode = exports.JOB_STATES = exports.PRIORITIES = exports.PAYLOAD_COMMANDS = exports.Command = exports.BYTES_PER_SAMPLE = exports.SAMPLE_FORMAT = exports.DEFAULT_FRONTEND = exports.WORKER_HEADER = exports.CLIENT_HEADER = exports.PROTOCOL_VERSION = void 0;
exports.commandName = commandName;
exports.commandSide = commandSide;
exports.commandToBroker = commandToBroker;
exports.PROTOCOL_VERSION = 2;
exports.CLIENT_HEADER = "TTSC2";
exports.WORKER_HEADER = "TTSW2";
exports.DEFAULT_FRONTEND = "tcp://127.0.0.1:5555";
exports.SAMPLE_FORMAT = "s16le";
exports.BYTES_PER_SAMPLE = 2;
/** One-byte command codes; the high nibble tells the direction. */
exports.Command = {
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
};
const NAMES = new Map(Object.entries(exports.Command).map(([name, byte]) => [byte, name]));
/** The command's name for a byte, or undefined for a byte TTSP/2 does not define. */
function commandName(byte) {
    return NAMES.get(byte);
}
function commandSide(byte) {
    return byte < 0x20 ? exports.CLIENT_HEADER : exports.WORKER_HEADER;
}
function commandToBroker(byte) {
    const nibble = byte >> 4;
    return nibble === 0x0 || nibble === 0x2;
}
/** Commands that carry a raw PCM payload frame. */
exports.PAYLOAD_COMMANDS = new Set([
    exports.Command.PARTIAL,
    exports.Command.RESULT,
    exports.Command.RESULT_REPLY,
    exports.Command.W_PARTIAL,
    exports.Command.W_RESULT,
]);
exports.PRIORITIES = ["high", "normal", "low"];
exports.JOB_STATES = ["queued", "running", "done", "failed", "cancelled"];
/** Machine-readable error codes the broker sends in ERROR bodies. */
exports.ErrorCode = {
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
};
exports.JOB_ID_PATTERN = /^[A-Za-z0-9._:-]{1,128}$/;
exports.MAX_TEXT_CHARS = 1_000_000;
