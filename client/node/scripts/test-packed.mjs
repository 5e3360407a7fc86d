// `npm run test:package` (part of `npm test`): the package as users get it, from the tarball `npm pack` makes.
//   1. publint (packaging mistakes) and are-the-types-wrong (types per resolution mode: node10, node16 ESM
//      and CommonJS, bundler) on that tarball;
//   2. a fresh project installs the tarball; there, import and require() both load it (each its own build),
//      export the same names, round-trip every golden vector (protocol/vectors) and open/close a TtsClient
//      (the native zeromq binding loads).
// Needs the npm packages already installed here (npm ci); the fresh project's install reads npm's cache first.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

// Runs in the consumer project: what import and require() give must be the package's own two builds.
const CHECK = String.raw`
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";

import * as esm from "tts-broker-client";

const require = createRequire(import.meta.url);
const cjs = require("tts-broker-client");
const vectors = process.argv[2];

assert.match(import.meta.resolve("tts-broker-client"), /node_modules\/tts-broker-client\/lib\/esm\/index\.js$/);
assert.match(require.resolve("tts-broker-client"), /node_modules\/tts-broker-client\/lib\/cjs\/index\.cjs$/);
const names = (m) => Object.keys(m).filter((k) => k !== "default" && k !== "__esModule").sort();
assert.deepEqual(names(cjs), names(esm));
assert.ok(names(esm).includes("TtsClient") && names(esm).includes("generateAudio"));
assert.notEqual(cjs.TtsClient, esm.TtsClient, "require() and import load separate builds");

const manifest = JSON.parse(readFileSync(join(vectors, "manifest.json"), "utf8"));
for (const [label, mod] of [["import", esm], ["require", cjs]]) {
  let checked = 0;
  for (const v of manifest.filter((x) => x.valid)) {
    const frames = v.frames.map((f) => readFileSync(join(vectors, f)));
    const msg = mod.decodeMessage(frames, v.side, v.to_broker);
    assert.equal(JSON.stringify(msg.body), JSON.stringify(v.body), label + " " + v.name);
    const again = mod.encodeMessage(v.command_byte, v.body, frames.length === 3 ? frames[2] : undefined);
    assert.deepEqual(again.map((f) => Buffer.from(f).toString("hex")), frames.map((f) => f.toString("hex")));
    checked += 1;
  }
  for (const v of manifest.filter((x) => !x.valid)) {
    const frames = v.frames.map((f) => readFileSync(join(vectors, f)));
    assert.throws(() => mod.decodeMessage(frames, v.side, v.to_broker), mod.MalformedMessageError);
  }
  const client = new mod.TtsClient({ brokerUrl: "tcp://127.0.0.1:9", requestTimeoutMs: 100 });
  await client.close();
  await client.close(); // idempotent
  console.log("[test:package] " + label + ": the installed tarball loads; " + checked + " golden vectors round-trip");
}
`;

const root = new URL("..", import.meta.url).pathname;
const vectors = new URL("../../../protocol/vectors", import.meta.url).pathname;
const work = mkdtempSync(join(tmpdir(), "tts-node-packed-"));
const npmCli = process.env["npm_execpath"];
const npm = (args, cwd) => (npmCli && npmCli.endsWith(".js")
  ? execFileSync(process.execPath, [npmCli, ...args], { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] })
  : execFileSync("npm", args, { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] }));
const bin = (name, args) => execFileSync(join(root, "node_modules", ".bin", name), args, { cwd: work, stdio: "inherit" });
const say = (line) => console.log(`[test:package] ${line}`);

try {
  npm(["pack", root, "--pack-destination", work, "--loglevel=error"], work);
  const tarball = join(work, readdirSync(work).find((name) => name.endsWith(".tgz")));
  say(`packed ${tarball}`);

  bin("publint", ["run", tarball, "--strict"]);
  bin("attw", [tarball, "--profile", "strict", "--format", "table-flipped", "--no-emoji", "--no-color"]);
  say("publint and are-the-types-wrong: no problems");

  const project = join(work, "consumer");
  execFileSync("mkdir", [project]);
  writeFileSync(join(project, "package.json"), JSON.stringify({ name: "consumer", private: true, type: "commonjs" }));
  npm(["install", tarball, "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error"], project);
  writeFileSync(join(project, "check.mjs"), CHECK);
  execFileSync(process.execPath, ["check.mjs", vectors], { cwd: project, stdio: "inherit", timeout: 60_000 });
  say("ok");
} finally {
  rmSync(work, { recursive: true, force: true });
}
