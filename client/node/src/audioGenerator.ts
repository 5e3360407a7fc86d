/**
 * The seed's module API (helpers/audioGenerator), kept name for name on top of TtsClient:
 * generateAudio, createMessageChunks, processMessageChunks, healthCheck, getWorkerStatus,
 * shutdownWorkerManager, plus configure() to choose the broker.
 *
 * One module-level client is created on first use from configure(...) or TTS_BROKER_URL.
 */

import { TtsClient } from "./client.js";
import { BatchFailedError, InvalidArgumentError } from "./errors.js";
import { lineJobId, outputFilename, resolveInside } from "./naming.js";
import { toWav, writeFileAtomic } from "./output.js";
import type { StatusView, SynthesisResult, SynthesizeOptions, TtsClientOptions, VoiceValue } from "./types.js";

/** One voice line, as the seed's processMessageChunks takes them (snake_case keys are accepted too). */
export interface VoiceMessage {
  text: string;
  speaker?: string | null;
  id: string | number;
  /** Default 0, as in the Python client. */
  streamIndex?: string | number;
  stream_index?: string | number;
  /** Engine settings for this line. */
  voice?: Record<string, VoiceValue>;
  voice_settings?: Record<string, VoiceValue>;
}

export interface GeneratorOptions extends TtsClientOptions {
  /** Most jobs processMessageChunks keeps in flight at once. Default 256. */
  maxInFlight?: number;
  /** healthCheck's time limit (ms). Default 2000. */
  healthTimeoutMs?: number;
}

let settings: GeneratorOptions = {};
let shared: TtsClient | undefined;

/** Choose the broker and client options; closes the previous module client. Throws on a malformed URL. */
export function configure(options: GeneratorOptions = {}): void {
  const next = new TtsClient(options); // validates the URL now, connects on first use
  const previous = shared;
  settings = { ...options };
  shared = next;
  void previous?.close();
}

/** The module's client (created on first use). */
export function getClient(): TtsClient {
  if (shared === undefined || shared.isClosed) shared = new TtsClient(settings);
  return shared;
}

/**
 * Synthesise one line and write `{streamIndex}_{id}.wav` atomically inside `outputDir` (created if needed).
 * Resolves with the file's absolute path.
 */
export async function generateAudio(
  text: string,
  speaker: string | null | undefined,
  id: string | number,
  streamIndex: string | number,
  outputDir: string,
  options: SynthesizeOptions = {},
): Promise<string> {
  const filePath = resolveInside(outputDir, outputFilename(streamIndex, id, "wav"));
  const result = await getClient().synthesize(text, {
    jobId: lineJobId(streamIndex, id),
    ...options,
    speaker: speaker ?? options.speaker ?? null,
  });
  await writeWav(filePath, result);
  return filePath;
}

/** Write a result as a WAV file, atomically. */
export async function writeWav(filePath: string, result: SynthesisResult): Promise<void> {
  await writeFileAtomic(filePath, [toWav(result.audio, result.sampleRate, result.channels)]);
}

/** Split `messages` into consecutive chunks of at most `size`. */
export function createMessageChunks<T>(messages: readonly T[], size: number): T[][] {
  if (!Number.isInteger(size) || size < 1) throw new InvalidArgumentError(`chunk size must be a positive integer, got ${size}`);
  const chunks: T[][] = [];
  for (let i = 0; i < messages.length; i += size) chunks.push(messages.slice(i, i + size));
  return chunks;
}

export interface BatchOptions extends Omit<SynthesizeOptions, "jobId" | "jobIdPrefix"> {
  /** Most jobs in flight at once (default: configure's maxInFlight, else 256). */
  maxInFlight?: number;
  /** "raise" (default): after the batch, throw BatchFailedError if any line failed. "skip": return what was written. */
  onError?: "raise" | "skip";
}

/**
 * Generate every message of every chunk into `outputDir`; resolves with the written paths in message order.
 *
 * Unlike the seed, chunks do not wait for each other: up to maxInFlight jobs are in flight at once and the
 * broker spreads them over its workers. A failed line does not stop the others (as in the Python client);
 * see onError. Every target path is checked before anything is submitted.
 */
export async function processMessageChunks(
  chunks: readonly (readonly VoiceMessage[])[],
  outputDir: string,
  options: BatchOptions = {},
): Promise<string[]> {
  const { maxInFlight = settings.maxInFlight ?? 256, onError = "raise", ...jobOptions } = options;
  if (onError !== "raise" && onError !== "skip") throw new InvalidArgumentError(`onError must be "raise" or "skip"`);
  const lines = chunks.flat().map((m) => {
    if (typeof m?.text !== "string" || (typeof m.id !== "string" && typeof m.id !== "number")) {
      throw new InvalidArgumentError("a message needs a string `text` and a string or number `id`");
    }
    const streamIndex = m.streamIndex ?? m.stream_index ?? 0;
    resolveInside(outputDir, outputFilename(streamIndex, m.id, "wav")); // refuse a bad target before synthesis
    return { m, streamIndex, voice: m.voice ?? m.voice_settings ?? jobOptions.voice };
  });
  const written = new Array<string | undefined>(lines.length);
  const failures: { index: number; id: string | number; error: Error }[] = [];
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < lines.length) {
      const index = next++;
      const { m, streamIndex, voice } = lines[index]!;
      try {
        written[index] = await generateAudio(m.text, m.speaker, m.id, streamIndex, outputDir, { ...jobOptions, ...(voice ? { voice } : {}) });
      } catch (error) {
        failures.push({ index, id: m.id, error: error as Error });
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(Math.max(1, maxInFlight), lines.length) }, lane));
  const paths = written.filter((p): p is string => p !== undefined);
  if (failures.length > 0 && onError === "raise") {
    failures.sort((a, b) => a.index - b.index);
    const first = failures[0]!;
    throw new BatchFailedError(
      `${failures.length} of ${lines.length} lines failed (first: line ${first.id}: ${first.error.message})`,
      paths,
      failures.map(({ id, error }) => ({ id, error })),
    );
  }
  return paths;
}

/** True when the broker answers within the time limit, is not draining and has at least one worker. */
export async function healthCheck(options: { timeoutMs?: number } = {}): Promise<boolean> {
  try {
    const status = await getClient().status({ timeoutMs: options.timeoutMs ?? settings.healthTimeoutMs ?? 2000 });
    return !status.draining && status.workers.length > 0;
  } catch {
    return false;
  }
}

/** The broker's status view: queue, job counters and every worker (asynchronous, unlike the seed). */
export function getWorkerStatus(): Promise<StatusView> {
  return getClient().status();
}

/** Close the module's client; pending calls reject with ClosedError. The next call opens a new one. */
export async function shutdownWorkerManager(): Promise<void> {
  const client = shared;
  shared = undefined;
  await client?.close();
}
