/**
 * Encode and decode TTSP/2 multipart messages (PROTOCOL.md section 2).
 *
 * The one place that knows the frame layout. decodeMessage() throws only ProtocolError, whatever the bytes,
 * so the receive loop can catch one error type and keep going. Encoding produces the same bytes as the
 * Python codec (checked against protocol/vectors): keys in schema order, smallest integers, str/bin types,
 * float64 for float fields.
 */
import { ProtocolError } from "../errors.js";
import { type CommandName, type Side } from "./constants.js";
/** One decoded message: command byte and name, validated body in wire order, optional raw payload. */
export interface Message {
    command: number;
    name: CommandName;
    body: Record<string, unknown>;
    payload?: Uint8Array;
}
/** What the receiver could still read of a malformed message, so it can be matched to a request. */
export declare class MalformedMessageError extends ProtocolError {
    readonly command: number | undefined;
    readonly jobId: string | undefined;
    readonly reqId: string | undefined;
    constructor(message: string, info?: {
        command?: number;
        jobId?: string;
        reqId?: string;
    }, cause?: unknown);
}
/**
 * Frames for a DEALER peer to send (a ROUTER prepends the routing id).
 * Throws ProtocolError when the body does not validate or a payload is not allowed.
 */
export declare function encodeMessage(command: number, body: Record<string, unknown>, payload?: Uint8Array): Uint8Array[];
/** Validate and decode frames (without a routing id) that travel in the given direction. */
export declare function decodeMessage(frames: readonly Uint8Array[], side: Side, toBroker: boolean): Message;
