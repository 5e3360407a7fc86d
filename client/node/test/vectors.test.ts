/** The shared golden vectors (protocol/vectors): the Node codec reads and writes the Python codec's bytes. */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import * as path from "node:path";
import { describe, test } from "node:test";

import { outputFilename } from "../src/naming.js";
import { decodeMessage, encodeMessage, MalformedMessageError } from "../src/protocol/codec.js";
import { Command, type CommandName, ErrorCode, type Side } from "../src/protocol/constants.js";
import { VECTORS_DIR } from "./paths.js";

interface Vector {
  name: string;
  frames: string[];
  valid: boolean;
  command?: CommandName;
  command_byte?: number;
  side: Side;
  to_broker: boolean;
  body?: Record<string, unknown>;
  error?: string;
}

const manifest = JSON.parse(readFileSync(path.join(VECTORS_DIR, "manifest.json"), "utf8")) as Vector[];
const frameFiles = (v: Vector): Buffer[] => v.frames.map((f) => readFileSync(path.join(VECTORS_DIR, f)));
const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");

describe("golden vectors", { timeout: 10_000 }, () => {
  test("manifest has valid and invalid vectors", () => {
    assert.ok(manifest.filter((v) => v.valid).length >= 20);
    assert.ok(manifest.filter((v) => !v.valid).length >= 10);
  });

  for (const v of manifest.filter((x) => x.valid)) {
    test(`${v.name}: decodes to its body`, () => {
      const msg = decodeMessage(frameFiles(v), v.side, v.to_broker);
      assert.equal(msg.command, v.command_byte);
      assert.equal(msg.name, v.command);
      assert.equal(msg.command, Command[v.command!]);
      assert.deepEqual(msg.body, v.body);
      // key order is part of the contract, and deepEqual ignores it
      assert.deepEqual(JSON.stringify(msg.body), JSON.stringify(v.body));
    });

    test(`${v.name}: encoding its body gives identical bytes`, () => {
      const expected = frameFiles(v);
      const payload = expected.length === 3 ? expected[2] : undefined;
      const frames = encodeMessage(v.command_byte!, v.body!, payload);
      assert.equal(frames.length, expected.length);
      frames.forEach((frame, i) => assert.equal(hex(frame), hex(expected[i]!), `frame ${i} differs`));
    });
  }

  for (const v of manifest.filter((x) => !x.valid)) {
    test(`${v.name}: rejected (${v.error})`, () => {
      assert.throws(() => decodeMessage(frameFiles(v), v.side, v.to_broker), MalformedMessageError);
    });
  }
});

describe("codec edge cases", { timeout: 10_000 }, () => {
  const submit = (body: Record<string, unknown>): Uint8Array[] => encodeMessage(Command.SUBMIT, body);

  test("encoding fills defaults in wire order and ignores unknown keys", () => {
    const frames = submit({ extra: 1, text: "hi", job_id: "j1" });
    const msg = decodeMessage(frames, "TTSC2", true);
    assert.deepEqual(Object.keys(msg.body), ["job_id", "text", "speaker", "model", "priority", "deadline_ms", "timeout_ms", "stream", "voice", "cache"]);
  });

  test("encoding rejects bad bodies", () => {
    assert.throws(() => submit({ job_id: "a/b", text: "x" }), /job_id/);
    assert.throws(() => submit({ job_id: "a", text: "" }), /text/);
    assert.throws(() => submit({ job_id: "a", text: "x", priority: "urgent" }), /priority/);
    assert.throws(() => submit({ job_id: "a", text: "x", voice: { k: [1] } }), /voice/);
    assert.throws(() => encodeMessage(Command.PING, { req_id: "r" }, new Uint8Array(2)), /payload/);
  });

  test("decoding rejects non-string map keys, trailing bytes and wrong directions", () => {
    const frames = (body: number[]): Uint8Array[] => [Buffer.from([...Buffer.from("TTSC2"), Command.PONG]), Uint8Array.from(body)];
    assert.throws(() => decodeMessage(frames([0x81, 0x01, 0x02]), "TTSC2", false), MalformedMessageError);
    assert.throws(() => decodeMessage(frames([0x80, 0x80]), "TTSC2", false), MalformedMessageError);
    assert.throws(() => decodeMessage(frames([0x80]), "TTSC2", true), MalformedMessageError);
    const ok = encodeMessage(Command.PING, { req_id: "r1" });
    assert.throws(() => decodeMessage(ok, "TTSW2", true), MalformedMessageError);
  });

  test("a malformed body still reports the ids it carried", () => {
    const frames = encodeMessage(Command.PING, { req_id: "r9" });
    frames[0] = Buffer.from([...Buffer.from("TTSC2"), Command.PONG]); // PONG needs broker_id and time_ms
    assert.throws(() => decodeMessage(frames, "TTSC2", false), (err: unknown) => err instanceof MalformedMessageError && err.reqId === "r9");
  });

  test("string limits count code points, like Python", () => {
    const emoji = "\u{1F600}".repeat(256); // 256 code points, 512 UTF-16 units
    assert.doesNotThrow(() => submit({ job_id: "j", text: "x", speaker: emoji }));
    assert.throws(() => submit({ job_id: "j", text: "x", speaker: emoji + "a" }), /speaker/);
  });
});

describe("file names (filenames.json)", { timeout: 10_000 }, () => {
  const cases = JSON.parse(readFileSync(path.join(VECTORS_DIR, "filenames.json"), "utf8")) as {
    stream_index: string | number;
    id: string | number;
    ext: string;
    expected: string;
  }[];
  test("has cases", () => assert.ok(cases.length >= 5));
  for (const c of cases) {
    test(`${JSON.stringify(c.stream_index)}, ${JSON.stringify(c.id)} -> ${c.expected}`, () => {
      assert.equal(outputFilename(c.stream_index, c.id, c.ext), c.expected);
    });
  }
});

describe("error codes (error_codes.json)", { timeout: 10_000 }, () => {
  test("the Node client knows exactly the protocol's error codes", () => {
    const codes = JSON.parse(readFileSync(path.join(VECTORS_DIR, "error_codes.json"), "utf8")) as Record<string, boolean>;
    assert.deepEqual(Object.values(ErrorCode).sort(), Object.keys(codes).sort());
    assert.equal(codes["no_audio"], false);
  });
});
