// The seed's usage section, on the broker: run with a broker and a worker up, e.g.
//
//   python -m tts_broker --frontend tcp://127.0.0.1:5555 --backend tcp://127.0.0.1:5556 &
//   python -m tts_worker --broker tcp://127.0.0.1:5556 --engine tone --concurrency 2 &
//   TTS_BROKER_URL=tcp://127.0.0.1:5555 node examples/generate.mjs [outputDir]
//
// (`npm run example` in client/node runs this against lib/, which `npm install` there, or installing the
// folder into a project, built.)

import {
  createMessageChunks,
  generateAudio,
  getWorkerStatus,
  healthCheck,
  processMessageChunks,
  shutdownWorkerManager,
} from "tts-broker-client";

const outputDir = process.argv[2] ?? "output";

try {
  // Health check: the broker answers and has at least one worker.
  if (!(await healthCheck())) {
    console.error(`no broker with workers at ${process.env.TTS_BROKER_URL ?? "tcp://127.0.0.1:5555"} (set TTS_BROKER_URL)`);
    process.exitCode = 1;
  } else {
    // Generate single audio
    const filePath = await generateAudio("Hello, world!", "default", 1, 1, outputDir);
    console.log(`wrote ${filePath}`);

    // Process array of messages
    const messages = [
      { text: "First message", speaker: "default", id: 1 },
      { text: "Second message", speaker: "default", id: 2 },
    ];
    const chunks = createMessageChunks(messages, 10);
    const generatedFiles = await processMessageChunks(chunks, outputDir);
    console.log(`wrote ${generatedFiles.join(", ")}`);

    // Worker status (a Promise here; synchronous in the seed)
    const status = await getWorkerStatus();
    console.log(`broker ${status.broker_id}: ${status.queue.depth ?? 0} queued, ${status.workers.length} workers`);
    for (const w of status.workers) {
      console.log(`  ${w.name} ${w.engine}/${w.model} on ${w.device}: ${w.state}, ${w.jobs_done} done, ${(w.rss_bytes / 2 ** 20).toFixed(0)} MiB`);
    }
  }
} finally {
  // Close this process's connection (the broker and its workers keep running).
  await shutdownWorkerManager();
}
