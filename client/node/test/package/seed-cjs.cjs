// Run by scripts/test-node-package.sh in a fresh npm project: the installed package, loaded with require(),
// speaks the seed API to a CURVE broker. argv: brokerUrl secretFile brokerKeyFile outputDir
const assert = require("node:assert/strict");
const fs = require("node:fs");
const tts = require("tts-broker-client");

async function main() {
  const [brokerUrl, curveSecretFile, curveServerKeyFile, outputDir] = process.argv.slice(2);
  tts.configure({ brokerUrl, curveSecretFile, curveServerKeyFile, requestTimeoutMs: 2000 });
  const deadline = Date.now() + 60_000;
  while (!(await tts.healthCheck({ timeoutMs: 2000 }))) {
    if (Date.now() > deadline) throw new Error("no worker registered with the broker within 60 s");
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const file = await tts.generateAudio("Hello over CURVE from require().", null, 1, 1, outputDir);
  const wav = fs.readFileSync(file);
  assert.equal(wav.subarray(0, 4).toString("ascii"), "RIFF");
  assert.ok(wav.length > 44, "the WAV file has audio");
  const chunks = tts.createMessageChunks([{ text: "one", id: 2 }, { text: "two", id: 3 }], 1);
  const files = await tts.processMessageChunks(chunks, outputDir);
  assert.equal(files.length, 2);
  await tts.shutdownWorkerManager();
  console.log(`cjs ok: ${file} ${files.join(" ")}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
