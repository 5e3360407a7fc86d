/**
 * Encode and decode TTSP/2 multipart messages (PROTOCOL.md section 2).
 *
 * The one place that knows the frame layout. decodeMessage() throws only ProtocolError, whatever the bytes,
 * so the receive loop can catch one error type and keep going. Encoding produces the same bytes as the
 * Python codec (checked against protocol/vectors): keys in schema order, smallest integers, str/bin types,
 * float64 for float fields.
 */
import { Decoder, Encoder } from "@msgpack/msgpack";
import { ProtocolError } from "../errors.js";
import { CLIENT_HEADER, PAYLOAD_COMMANDS, WORKER_HEADER, commandName, commandSide, commandToBroker, } from "./constants.js";
import { BODY_SCHEMAS, SchemaError, hasFloatField, normalize } from "./schema.js";
const MAX_BODY_BYTES = 4 * 1024 * 1024; // bodies are metadata; audio rides in the payload frame
const HEADERS = new Map([
    [CLIENT_HEADER, Buffer.from(CLIENT_HEADER, "ascii")],
    [WORKER_HEADER, Buffer.from(WORKER_HEADER, "ascii")],
]);
const HEAD_LENGTH = CLIENT_HEADER.length + 1; // frame 0: the side's header, then the command byte
const HEAD_FRAMES = new Map();
const plain = new Encoder();
// A JS number does not say whether it is a float; float fields force float64, as Python writes them.
const float64 = new Encoder({ forceIntegerToFloat: true });
const decoder = new Decoder({
    mapKeyConverter: (key) => {
        if (typeof key !== "string")
            throw new SchemaError("map keys must be strings");
        return key;
    },
    maxStrLength: MAX_BODY_BYTES,
    maxBinLength: MAX_BODY_BYTES,
});
const floatSchemas = new Set([...BODY_SCHEMAS.values()].filter(hasFloatField));
/** What the receiver could still read of a malformed message, so it can be matched to a request. */
export class MalformedMessageError extends ProtocolError {
    command;
    jobId;
    reqId;
    constructor(message, info = {}, cause) {
        super(message, { cause });
        this.command = info.command;
        this.jobId = info.jobId;
        this.reqId = info.reqId;
    }
}
/**
 * Frames for a DEALER peer to send (a ROUTER prepends the routing id).
 * Throws ProtocolError when the body does not validate or a payload is not allowed.
 */
export function encodeMessage(command, body, payload) {
    const name = commandName(command);
    const schema = BODY_SCHEMAS.get(command);
    if (name === undefined || schema === undefined)
        throw new ProtocolError(`unknown command 0x${hex(command)}`);
    if (payload !== undefined && !PAYLOAD_COMMANDS.has(command))
        throw new ProtocolError(`${name} carries no payload`);
    let normalized;
    try {
        normalized = normalize(schema, body);
    }
    catch (err) {
        throw new ProtocolError(`invalid ${name} body: ${err.message}`, { cause: err });
    }
    const frames = [headFrame(command), packBody(schema, normalized)];
    if (payload !== undefined)
        frames.push(payload);
    return frames;
}
/** Validate and decode frames (without a routing id) that travel in the given direction. */
export function decodeMessage(frames, side, toBroker) {
    if (frames.length < 2 || frames.length > 3) {
        if ((frames.length === 4 || frames.length === 5) && frames[0].length === 0) {
            throw new MalformedMessageError("a TTSP/1 message (empty delimiter frame first); this peer speaks TTSP/2");
        }
        throw new MalformedMessageError(`expected 2 or 3 frames, got ${frames.length}`);
    }
    const [head, bodyBytes] = frames;
    if (head.length !== HEAD_LENGTH || !bytesEqual(head.subarray(0, HEAD_LENGTH - 1), HEADERS.get(side))) {
        throw new MalformedMessageError(`bad frame 0 ${JSON.stringify(ascii(head.subarray(0, 16)))}: expected ${side} and a command byte`);
    }
    const command = head[HEAD_LENGTH - 1];
    const name = commandName(command);
    if (name === undefined)
        throw new MalformedMessageError(`unknown command 0x${hex(command)}`);
    if (commandSide(command) !== side || commandToBroker(command) !== toBroker) {
        throw new MalformedMessageError(`command ${name} not allowed here`, { command });
    }
    const raw = unpackMap(bodyBytes, name, command);
    const ids = {
        command,
        jobId: typeof raw["job_id"] === "string" ? raw["job_id"] : undefined,
        reqId: typeof raw["req_id"] === "string" ? raw["req_id"] : undefined,
    };
    let payload;
    if (frames.length === 3) {
        if (!PAYLOAD_COMMANDS.has(command))
            throw new MalformedMessageError(`${name} takes no payload frame`, ids);
        payload = frames[2];
    }
    else if (PAYLOAD_COMMANDS.has(command)) {
        throw new MalformedMessageError(`${name} needs a payload frame`, ids);
    }
    let body;
    try {
        body = normalize(BODY_SCHEMAS.get(command), raw);
    }
    catch (err) {
        throw new MalformedMessageError(`invalid ${name} body: ${err.message}`, ids, err);
    }
    return payload === undefined ? { command, name, body } : { command, name, body, payload };
}
function unpackMap(data, name, command) {
    if (data.length > MAX_BODY_BYTES) {
        throw new MalformedMessageError(`${name} body too large (${data.length} bytes)`, { command });
    }
    let raw;
    try {
        raw = decoder.decode(data);
    }
    catch (err) {
        throw new MalformedMessageError(`${name} body is not valid msgpack: ${err.message}`, { command }, err);
    }
    if (typeof raw !== "object" || raw === null || Array.isArray(raw) || ArrayBuffer.isView(raw)) {
        throw new MalformedMessageError(`${name} body must be a msgpack map`, { command });
    }
    return raw;
}
function packBody(schema, body) {
    if (!floatSchemas.has(schema))
        return plain.encode(body);
    const parts = [];
    packObject(schema, body, parts);
    return Buffer.concat(parts);
}
function packObject(schema, body, parts) {
    parts.push(containerHeader(schema.length, 0x80, 0xde));
    for (const [key, spec] of schema) {
        parts.push(plain.encode(key));
        packValue(spec, body[key], parts);
    }
}
function packValue(spec, value, parts) {
    if (value === null)
        parts.push(plain.encode(null));
    else if (spec.kind === "float")
        parts.push(float64.encode(value));
    else if (spec.kind === "object")
        packObject(spec.schema, value, parts);
    else if (spec.kind === "list") {
        const items = value;
        parts.push(containerHeader(items.length, 0x90, 0xdc));
        for (const item of items)
            packObject(spec.item, item, parts);
    }
    else
        parts.push(plain.encode(value));
}
/** fixmap/fixarray, else map16/array16, else map32/array32 (the 32-bit code is the 16-bit one + 1). */
function containerHeader(n, fix, code16) {
    if (n < 16)
        return Uint8Array.of(fix | n);
    if (n < 0x10000)
        return Uint8Array.of(code16, n >> 8, n & 0xff);
    const b = Buffer.alloc(5);
    b[0] = code16 + 1;
    b.writeUInt32BE(n, 1);
    return b;
}
function headFrame(command) {
    let frame = HEAD_FRAMES.get(command);
    if (frame === undefined) {
        frame = Buffer.concat([HEADERS.get(commandSide(command)), Uint8Array.of(command)]);
        HEAD_FRAMES.set(command, frame);
    }
    return frame;
}
function bytesEqual(a, b) {
    if (a.length !== b.length)
        return false;
    for (let i = 0; i < a.length; i++)
        if (a[i] !== b[i])
            return false;
    return true;
}
function ascii(b) {
    return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("latin1");
}
function hex(byte) {
    return byte.toString(16).padStart(2, "0");
}
