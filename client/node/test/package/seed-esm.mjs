// Run by scripts/test-node-package.sh in a fresh npm project: the installed package, loaded with import,
// speaks the seed API to a CURVE broker, and an unlisted key is refused clearly.
// argv: brokerUrl secretFile brokerKeyFile outputDir unlistedSecretFile
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import { BrokerUnavailableError, CURVE_REFUSED, TtsClient, configure, generateAudio, healthCheck,
  shutdownWorkerManager } from "tts-broker-client";

const [brokerUrl, curveSecretFile, curveServerKeyFile, outputDir, unlistedSecret] = process.argv.slice(2);
configure({ brokerUrl, curveSecretFile, curveServerKeyFile, requestTimeoutMs: 2000 });
const deadline = Date.now() + 60_000;
while (!(await healthCheck({ timeoutMs: 2000 }))) {
  if (Date.now() > deadline) throw new Error("no worker registered with the broker within 60 s");
  await new Promise((resolve) => setTimeout(resolve, 100));
}
const file = await generateAudio("Hello over CURVE from import.", null, 1, 2, outputDir);
assert.equal(readFileSync(file).subarray(0, 4).toString("ascii"), "RIFF");
await shutdownWorkerManager();

// An unlisted key: the refusal arrives as a handshake:error:auth event, long before the 20 s timeout.
const stranger = new TtsClient({ brokerUrl, curveSecretFile: unlistedSecret, curveServerKeyFile,
  requestTimeoutMs: 20_000, logger: { warn: () => undefined, debug: () => undefined } });
const started = Date.now();
await assert.rejects(stranger.ping(), (err) => {
  assert.ok(err instanceof BrokerUnavailableError, String(err));
  assert.ok(err.message.includes(CURVE_REFUSED), err.message);
  return true;
});
assert.ok(Date.now() - started < 15_000, "refusal reported before the request timeout");
await stranger.close();
console.log(`esm ok: ${file}; unlisted key refused: ${CURVE_REFUSED}`);

// An idle CURVE client left open must not keep Node alive (the script ends by itself; the runner's timeout
// fails it otherwise).
const idle = new TtsClient({ brokerUrl, curveSecretFile, curveServerKeyFile });
await idle.ping();
console.log("esm: an idle CURVE client does not hold the process");
