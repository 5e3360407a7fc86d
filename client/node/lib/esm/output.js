/** Audio output: WAV encoding of s16le PCM and atomic writes inside a chosen folder. */
import { randomBytes } from "node:crypto";
import { mkdir, open, rename, rm } from "node:fs/promises";
import * as path from "node:path";
import { BYTES_PER_SAMPLE } from "./protocol/constants.js";
const WAV_HEADER_BYTES = 44;
/** A 44-byte RIFF/WAVE header for 16-bit PCM. */
export function wavHeader(pcmBytes, sampleRate, channels) {
    const blockAlign = channels * BYTES_PER_SAMPLE;
    const header = Buffer.alloc(WAV_HEADER_BYTES);
    header.write("RIFF", 0, "ascii");
    header.writeUInt32LE(36 + pcmBytes, 4);
    header.write("WAVE", 8, "ascii");
    header.write("fmt ", 12, "ascii");
    header.writeUInt32LE(16, 16); // fmt chunk size
    header.writeUInt16LE(1, 20); // PCM
    header.writeUInt16LE(channels, 22);
    header.writeUInt32LE(sampleRate, 24);
    header.writeUInt32LE(sampleRate * blockAlign, 28); // byte rate
    header.writeUInt16LE(blockAlign, 32);
    header.writeUInt16LE(BYTES_PER_SAMPLE * 8, 34);
    header.write("data", 36, "ascii");
    header.writeUInt32LE(pcmBytes, 40);
    return header;
}
/** A whole WAV file (header + PCM) in one buffer. */
export function toWav(pcm, sampleRate, channels) {
    return Buffer.concat([wavHeader(pcm.byteLength, sampleRate, channels), pcm]);
}
/**
 * Write `parts` to `filePath` atomically: a temporary name in the same folder, fsync, rename.
 * A reader never sees a half-written file; on failure the temporary file is removed.
 */
export async function writeFileAtomic(filePath, parts) {
    const dir = path.dirname(filePath);
    await mkdir(dir, { recursive: true });
    const tmp = path.join(dir, `.${path.basename(filePath)}.${randomBytes(6).toString("hex")}.tmp`);
    const handle = await open(tmp, "wx", 0o644);
    try {
        try {
            // writeFile on a handle writes the whole buffer from the current position, looping on short writes.
            for (const part of parts)
                await handle.writeFile(part);
            await handle.datasync();
        }
        finally {
            await handle.close();
        }
        await rename(tmp, filePath);
    }
    catch (err) {
        await rm(tmp, { force: true });
        throw err;
    }
}
