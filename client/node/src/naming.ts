/** Output file and job id naming shared with the Python client (PROTOCOL.md section 7). */

import { createHash, randomBytes } from "node:crypto";
import * as path from "node:path";

import { InvalidArgumentError } from "./errors.js";

export const MAX_PART_CHARS = 64;
const MAX_JOB_ID_CHARS = 128;
// The `u` flag makes one astral character (an emoji) one `_`, as Python's re does per code point.
const UNSAFE = /[^A-Za-z0-9._-]/gu;

/** One component of a file name that cannot leave its folder or hide itself. */
export function safeNamePart(value: unknown): string {
  const text = String(value).replace(UNSAFE, "_").replace(/^\.+/, "").slice(0, MAX_PART_CHARS);
  return text || "_";
}

/** safeNamePart, plus `-` and 8 hex digits of the value's SHA-256 whenever making it safe changed it,
 * so two ids that differ only in unsafe characters (or past the 64th) never share a file. */
export function safeFilePart(value: unknown): string {
  const text = String(value);
  const safe = safeNamePart(text);
  if (safe === text) return safe;
  const digest = createHash("sha256").update(text, "utf8").digest("hex").slice(0, 8);
  return `${safe.slice(0, MAX_PART_CHARS - 9)}-${digest}`;
}

/** `{streamIndex}_{id}.{ext}` with each part made safe (and told apart by a digest if that changed it). */
export function outputFilename(streamIndex: unknown, lineId: unknown, ext: string): string {
  return `${safeFilePart(streamIndex)}_${safeFilePart(lineId)}.${safeNamePart(ext)}`;
}

/** The absolute path of `fileName` inside `outputDir`; throws if it would resolve anywhere else. */
export function resolveInside(outputDir: string, fileName: string): string {
  const dir = path.resolve(outputDir);
  const full = path.resolve(dir, fileName);
  if (path.dirname(full) !== dir || path.basename(full) !== fileName) {
    throw new InvalidArgumentError(`file name ${JSON.stringify(fileName)} would leave ${dir}`);
  }
  return full;
}

/** `{prefix}-{random hex}`: a fresh, valid job id. */
export function makeJobId(prefix = "job"): string {
  const suffix = randomBytes(8).toString("hex");
  const head = safeNamePart(prefix).slice(0, MAX_JOB_ID_CHARS - suffix.length - 1);
  return `${head}-${suffix}`;
}

/** The job id generateAudio uses: `line-{streamIndex}-{id}-{random hex}`, as the Python client makes it. */
export function lineJobId(streamIndex: unknown, lineId: unknown): string {
  return makeJobId(`line-${safeNamePart(streamIndex).slice(0, 32)}-${safeNamePart(lineId)}`);
}
