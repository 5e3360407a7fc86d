/** Output file and job id naming shared with the Python client (PROTOCOL.md section 7). */
import { randomBytes } from "node:crypto";
import * as path from "node:path";
import { InvalidArgumentError } from "./errors.js";
export const MAX_PART_CHARS = 64;
const MAX_JOB_ID_CHARS = 128;
// The `u` flag makes one astral character (an emoji) one `_`, as Python's re does per code point.
const UNSAFE = /[^A-Za-z0-9._-]/gu;
/** One component of a file name that cannot leave its folder or hide itself. */
export function safeNamePart(value) {
    const text = String(value).replace(UNSAFE, "_").replace(/^\.+/, "").slice(0, MAX_PART_CHARS);
    return text || "_";
}
/** `{streamIndex}_{id}.{ext}` with each part made safe. */
export function outputFilename(streamIndex, lineId, ext) {
    return `${safeNamePart(streamIndex)}_${safeNamePart(lineId)}.${safeNamePart(ext)}`;
}
/** The absolute path of `fileName` inside `outputDir`; throws if it would resolve anywhere else. */
export function resolveInside(outputDir, fileName) {
    const dir = path.resolve(outputDir);
    const full = path.resolve(dir, fileName);
    if (path.dirname(full) !== dir || path.basename(full) !== fileName) {
        throw new InvalidArgumentError(`file name ${JSON.stringify(fileName)} would leave ${dir}`);
    }
    return full;
}
/** `{prefix}-{random hex}`: a fresh, valid job id. */
export function makeJobId(prefix = "job") {
    const suffix = randomBytes(8).toString("hex");
    const head = safeNamePart(prefix).slice(0, MAX_JOB_ID_CHARS - suffix.length - 1);
    return `${head}-${suffix}`;
}
/** The job id generateAudio uses: `line-{streamIndex}-{id}-{random hex}`, as the Python client makes it. */
export function lineJobId(streamIndex, lineId) {
    return makeJobId(`line-${safeNamePart(streamIndex).slice(0, 32)}-${safeNamePart(lineId)}`);
}
