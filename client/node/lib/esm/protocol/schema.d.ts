/**
 * Body schemas: one per command, in wire key order (PROTOCOL.md sections 3, 4 and 6).
 *
 * Mirrors protocol/tts_protocol/messages.py: the same keys, order, defaults and constraints. Validation is
 * strict (a peer never gets "1" where it expects 1) and unknown keys are ignored for forward compatibility.
 */
export type FieldSpec = ({
    kind: "str";
    minLen?: number;
    maxLen?: number;
    pattern?: RegExp;
} & Common) | ({
    kind: "int";
    min?: number;
    max?: number;
} & Common) | ({
    kind: "float";
} & Common) | ({
    kind: "bool";
} & Common) | ({
    kind: "enum";
    values: readonly string[];
} & Common)
/** map str -> nil/bool/int/float/str: engine voice settings and reload options */
 | ({
    kind: "settings";
} & Common)
/** map str -> anything (status counters, heartbeat stats) */
 | ({
    kind: "map";
    maxEntries?: number;
} & Common) | ({
    kind: "object";
    schema: Schema;
} & Common) | ({
    kind: "list";
    item: Schema;
    maxEntries?: number;
} & Common) | ({
    kind: "strList";
    maxLen?: number;
    maxEntries?: number;
} & Common);
interface Common {
    nullable?: boolean;
    /** present = the key is optional and takes this value (a function makes a fresh one) when missing */
    default?: unknown;
}
export type Schema = readonly (readonly [string, FieldSpec])[];
/** The body schema of every command, by command byte. */
export declare const BODY_SCHEMAS: ReadonlyMap<number, Schema>;
/** Thrown by normalize(); the codec wraps it in a ProtocolError or InvalidArgumentError. */
export declare class SchemaError extends Error {
}
/**
 * A new object holding exactly the schema's keys, in wire order, with defaults filled in.
 * Throws SchemaError naming the first bad field.
 */
export declare function normalize(schema: Schema, input: Record<string, unknown>, path?: string): Record<string, unknown>;
/** True when encoding must force float64 somewhere below this schema (a JS number cannot say so). */
export declare function hasFloatField(schema: Schema): boolean;
export {};
