/** TTSP/2 constants: headers, command bytes, priorities, states and error codes (PROTOCOL.md 2-3). */
export declare const PROTOCOL_VERSION = 2;
export declare const CLIENT_HEADER = "TTSC2";
export declare const WORKER_HEADER = "TTSW2";
export declare const DEFAULT_FRONTEND = "tcp://127.0.0.1:5555";
export declare const SAMPLE_FORMAT = "s16le";
export declare const BYTES_PER_SAMPLE = 2;
/** Which pair of peers a message travels between; the value starts frame 0 (the command byte follows). */
export type Side = typeof CLIENT_HEADER | typeof WORKER_HEADER;
/** One-byte command codes; the high nibble tells the direction. */
export declare const Command: {
    readonly SUBMIT: 1;
    readonly CANCEL: 2;
    readonly JOB_STATUS: 3;
    readonly BROKER_STATUS: 4;
    readonly PING: 5;
    readonly RELOAD: 6;
    readonly JOBS: 7;
    readonly RETRY: 8;
    readonly DRAIN_WORKER: 9;
    readonly PAUSE_MODEL: 10;
    readonly RESUME_MODEL: 11;
    readonly GET_RESULT: 12;
    readonly ACCEPTED: 17;
    readonly PARTIAL: 18;
    readonly RESULT: 19;
    readonly ERROR: 20;
    readonly JOB_STATUS_REPLY: 21;
    readonly BROKER_STATUS_REPLY: 22;
    readonly PONG: 23;
    readonly RELOAD_REPLY: 24;
    readonly JOBS_REPLY: 25;
    readonly ADMIN_REPLY: 26;
    readonly RESULT_REPLY: 28;
    readonly W_READY: 33;
    readonly W_HEARTBEAT: 34;
    readonly W_PARTIAL: 35;
    readonly W_RESULT: 36;
    readonly W_FAIL: 37;
    readonly W_DISCONNECT: 38;
    readonly B_JOB: 49;
    readonly B_CANCEL: 50;
    readonly B_HEARTBEAT: 51;
    readonly B_DISCONNECT: 52;
    readonly B_RELOAD: 53;
};
export type CommandName = keyof typeof Command;
export type CommandByte = (typeof Command)[CommandName];
/** The command's name for a byte, or undefined for a byte TTSP/2 does not define. */
export declare function commandName(byte: number): CommandName | undefined;
export declare function commandSide(byte: number): Side;
export declare function commandToBroker(byte: number): boolean;
/** Commands that carry a raw PCM payload frame. */
export declare const PAYLOAD_COMMANDS: ReadonlySet<number>;
export declare const PRIORITIES: readonly ["high", "normal", "low"];
export type Priority = (typeof PRIORITIES)[number];
export declare const JOB_STATES: readonly ["queued", "running", "done", "failed", "cancelled"];
export type JobState = (typeof JOB_STATES)[number];
/** Machine-readable error codes the broker sends in ERROR bodies. */
export declare const ErrorCode: {
    readonly PROTOCOL: "protocol";
    readonly BAD_REQUEST: "bad_request";
    readonly QUEUE_FULL: "queue_full";
    readonly SHUTTING_DOWN: "shutting_down";
    readonly NO_WORKERS: "no_workers";
    readonly CANCELLED: "cancelled";
    readonly DEADLINE_EXCEEDED: "deadline_exceeded";
    readonly MAX_ATTEMPTS: "max_attempts";
    readonly ENGINE_ERROR: "engine_error";
    readonly NOT_FOUND: "not_found";
    readonly FORBIDDEN: "forbidden";
    readonly INTERNAL: "internal";
    readonly OUT_OF_RANGE: "out_of_range";
    readonly TOO_LARGE: "too_large";
    readonly CONFLICT: "conflict";
    readonly TOO_MANY_JOBS: "too_many_jobs";
    readonly JOURNAL_UNAVAILABLE: "journal_unavailable";
    readonly NO_AUDIO: "no_audio";
};
export type RemoteErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];
export declare const JOB_ID_PATTERN: RegExp;
export declare const MAX_TEXT_CHARS = 1000000;
