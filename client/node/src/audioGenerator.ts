/**
 * The seed's module API (helpers/audioGenerator), kept name for name on top of TtsClient:
 * generateAudio, createMessageChunks, processMessageChunks, healthCheck, getWorkerStatus,
 * shutdownWorkerManager, plus configure() to choose the broker.
 *
 * One module-level client is created on first use from configure(...) or TTS_BROKER_URL.
 */

import { TtsClient } from "./client.js";
import { InvalidArgumentError } from "./errors.js";
import { lineJobId, outputFilename, resolveInside } from "./naming.js";
import { toWav, writeFileAtomic } from "./output.js";
import type { StatusView, SynthesisResult, SynthesizeOptions, TtsClientOptions } from "./types.js";

/** One voice line, as the seed's processMessageChunks takes them. */
export interface VoiceMessage {
  text: string;
  speaker?: string | null;
  id: string | number;
  /** Default: the index of the chunk the message is in. */
  streamIndex?: string | number;
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

/**
 * Generate every message of every chunk into `outputDir`; resolves with the file paths in message order.
 *
 * Unlike the seed, chunks do not run one after another: up to maxInFlight jobs are in flight at once and
 * the broker spreads them over its workers. On the first failure no new job starts; the call rejects with
 * that error once the jobs already in flight have settled (so no file is written after it rejects).
 */
export async function processMessageChunks(
  chunks: readonly (readonly VoiceMessage[])[],
  outputDir: string,
  options: Omit<SynthesizeOptions, "jobId"> & { maxInFlight?: number } = {},
): Promise<string[]> {
  const { maxInFlight = settings.maxInFlight ?? 256, ...jobOptions } = options;
  const work = chunks.flatMap((chunk, chunkIndex) => chunk.map((m) => ({ m, streamIndex: m.streamIndex ?? chunkIndex })));
  const paths = new Array<string>(work.length);
  let next = 0;
  let failure: { error: unknown } | undefined;
  const lane = async (): Promise<void> => {
    while (failure === undefined && next < work.length) {
      const i = next++;
      const { m, streamIndex } = work[i]!;
      try {
        paths[i] = await generateAudio(m.text, m.speaker, m.id, streamIndex, outputDir, jobOptions);
      } catch (error) {
        failure ??= { error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(Math.max(1, maxInFlight), work.length) }, lane));
  if (failure !== undefined) throw failure.error;
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
