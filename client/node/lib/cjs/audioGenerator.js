"use strict";
/**
 * The seed's module API (helpers/audioGenerator), kept name for name on top of TtsClient:
 * generateAudio, createMessageChunks, processMessageChunks, healthCheck, getWorkerStatus,
 * shutdownWorkerManager, plus configure() to choose the broker.
 *
 * One module-level client is created on first use from configure(...) or TTS_BROKER_URL.
 */
Object.defineProperty(exports, "__esModule", { value: true });
exports.configure = configure;
exports.getClient = getClient;
exports.generateAudio = generateAudio;
exports.writeWav = writeWav;
exports.createMessageChunks = createMessageChunks;
exports.processMessageChunks = processMessageChunks;
exports.healthCheck = healthCheck;
exports.getWorkerStatus = getWorkerStatus;
exports.shutdownWorkerManager = shutdownWorkerManager;
const client_js_1 = require("./client.js");
const errors_js_1 = require("./errors.js");
const naming_js_1 = require("./naming.js");
const output_js_1 = require("./output.js");
let settings = {};
let shared;
/** Choose the broker and client options; closes the previous module client. Throws on a malformed URL. */
function configure(options = {}) {
    const next = new client_js_1.TtsClient(options); // validates the URL now, connects on first use
    const previous = shared;
    settings = { ...options };
    shared = next;
    void previous?.close();
}
/** The module's client (created on first use). */
function getClient() {
    if (shared === undefined || shared.isClosed)
        shared = new client_js_1.TtsClient(settings);
    return shared;
}
/**
 * Synthesise one line and write `{streamIndex}_{id}.wav` atomically inside `outputDir` (created if needed).
 * Resolves with the file's absolute path.
 */
async function generateAudio(text, speaker, id, streamIndex, outputDir, options = {}) {
    const filePath = (0, naming_js_1.resolveInside)(outputDir, (0, naming_js_1.outputFilename)(streamIndex, id, "wav"));
    const result = await getClient().synthesize(text, {
        jobId: (0, naming_js_1.lineJobId)(streamIndex, id),
        ...options,
        speaker: speaker ?? options.speaker ?? null,
    });
    await writeWav(filePath, result);
    return filePath;
}
/** Write a result as a WAV file, atomically. */
async function writeWav(filePath, result) {
    await (0, output_js_1.writeFileAtomic)(filePath, [(0, output_js_1.toWav)(result.audio, result.sampleRate, result.channels)]);
}
/** Split `messages` into consecutive chunks of at most `size`. */
function createMessageChunks(messages, size) {
    if (!Number.isInteger(size) || size < 1)
        throw new errors_js_1.InvalidArgumentError(`chunk size must be a positive integer, got ${size}`);
    const chunks = [];
    for (let i = 0; i < messages.length; i += size)
        chunks.push(messages.slice(i, i + size));
    return chunks;
}
/**
 * Generate every message of every chunk into `outputDir`; resolves with the written paths in message order.
 *
 * Unlike the seed, chunks do not wait for each other: up to maxInFlight jobs are in flight at once and the
 * broker spreads them over its workers. A failed line does not stop the others (as in the Python client);
 * see onError. Every target path is checked before anything is submitted.
 */
async function processMessageChunks(chunks, outputDir, options = {}) {
    const { maxInFlight = settings.maxInFlight ?? 256, onError = "raise", ...jobOptions } = options;
    if (onError !== "raise" && onError !== "skip")
        throw new errors_js_1.InvalidArgumentError(`onError must be "raise" or "skip"`);
    const lines = chunks.flat().map((m) => {
        if (typeof m?.text !== "string" || (typeof m.id !== "string" && typeof m.id !== "number")) {
            throw new errors_js_1.InvalidArgumentError("a message needs a string `text` and a string or number `id`");
        }
        const streamIndex = m.streamIndex ?? m.stream_index ?? 0;
        (0, naming_js_1.resolveInside)(outputDir, (0, naming_js_1.outputFilename)(streamIndex, m.id, "wav")); // refuse a bad target before synthesis
        return { m, streamIndex, voice: m.voice ?? m.voice_settings ?? jobOptions.voice };
    });
    const written = new Array(lines.length);
    const failures = [];
    let next = 0;
    const lane = async () => {
        while (next < lines.length) {
            const index = next++;
            const { m, streamIndex, voice } = lines[index];
            try {
                written[index] = await generateAudio(m.text, m.speaker, m.id, streamIndex, outputDir, { ...jobOptions, ...(voice ? { voice } : {}) });
            }
            catch (error) {
                failures.push({ index, id: m.id, error: error });
            }
        }
    };
    await Promise.all(Array.from({ length: Math.min(Math.max(1, maxInFlight), lines.length) }, lane));
    const paths = written.filter((p) => p !== undefined);
    if (failures.length > 0 && onError === "raise") {
        failures.sort((a, b) => a.index - b.index);
        const first = failures[0];
        throw new errors_js_1.BatchFailedError(`${failures.length} of ${lines.length} lines failed (first: line ${first.id}: ${first.error.message})`, paths, failures.map(({ id, error }) => ({ id, error })));
    }
    return paths;
}
/** True when the broker answers within the time limit, is not draining and has at least one worker. */
async function healthCheck(options = {}) {
    try {
        const status = await getClient().status({ timeoutMs: options.timeoutMs ?? settings.healthTimeoutMs ?? 2000 });
        return !status.draining && status.workers.length > 0;
    }
    catch {
        return false;
    }
}
/** The broker's status view: queue, job counters and every worker (asynchronous, unlike the seed). */
function getWorkerStatus() {
    return getClient().status();
}
/** Close the module's client; pending calls reject with ClosedError. The next call opens a new one. */
async function shutdownWorkerManager() {
    const client = shared;
    shared = undefined;
    await client?.close();
}
