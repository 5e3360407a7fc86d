/** Test helpers: read back a WAV header, and how many samples the tone test engine makes for a text. */

import assert from "node:assert/strict";

export interface WavInfo {
  sampleRate: number;
  channels: number;
  bitsPerSample: number;
  dataBytes: number;
}

/** Parse a canonical 44-byte-header PCM WAV file, checking every field it can. */
export function parseWav(file: Buffer): WavInfo {
  assert.equal(file.toString("ascii", 0, 4), "RIFF");
  assert.equal(file.readUInt32LE(4), file.length - 8);
  assert.equal(file.toString("ascii", 8, 16), "WAVEfmt ");
  assert.equal(file.readUInt32LE(16), 16);
  assert.equal(file.readUInt16LE(20), 1);
  const channels = file.readUInt16LE(22);
  const sampleRate = file.readUInt32LE(24);
  const bitsPerSample = file.readUInt16LE(34);
  assert.equal(file.readUInt32LE(28), sampleRate * channels * (bitsPerSample / 8));
  assert.equal(file.readUInt16LE(32), channels * (bitsPerSample / 8));
  assert.equal(file.toString("ascii", 36, 40), "data");
  const dataBytes = file.readUInt32LE(40);
  assert.equal(dataBytes, file.length - 44);
  return { sampleRate, channels, bitsPerSample, dataBytes };
}

/** Samples the tone engine renders: per sentence round((0.040 + 0.004 * chars) * scale * 16000). */
export function toneSamples(text: string, lengthScale = 1): number {
  return text
    .split(/(?<=[.!?])\s+/u)
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
    .reduce((sum, s) => sum + Math.max(1, Math.round((0.04 + 0.004 * [...s].length) * lengthScale * 16_000)), 0);
}
