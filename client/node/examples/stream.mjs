// The TtsClient class: stream a long text chunk by chunk into a WAV file, with a time limit.
//
//   TTS_BROKER_URL=tcp://127.0.0.1:5555 node examples/stream.mjs [outputDir]

import { TtsClient, TimeoutError, JobFailedError, toWav, writeFileAtomic, resolveInside } from "tts-broker-client";

const outputDir = process.argv[2] ?? "output";
const client = new TtsClient(); // TTS_BROKER_URL, else tcp://127.0.0.1:5555

try {
  const stream = client.stream("Once upon a time. There was a broker. It never lost a job.", {
    speaker: "default",
    signal: AbortSignal.timeout(30_000), // give up (and cancel the job) after 30 s
  });
  const pieces = [];
  for await (const chunk of stream) {
    console.log(`chunk ${chunk.index}: ${chunk.pcm.byteLength} bytes at ${chunk.sampleRate} Hz (attempt ${chunk.attempt})`);
    pieces.push(chunk.pcm); // play it, forward it, ...
  }
  const result = await stream.result;
  const file = resolveInside(outputDir, "stream.wav");
  await writeFileAtomic(file, [toWav(Buffer.concat(pieces), result.sampleRate, result.channels)]);
  console.log(`${result.durationS.toFixed(2)} s of audio from ${result.engine}/${result.model} -> ${file}`);
} catch (err) {
  if (err instanceof TimeoutError || err instanceof JobFailedError) console.error(`${err.code}: ${err.message}`);
  else throw err;
  process.exitCode = 1;
} finally {
  await client.close();
}
