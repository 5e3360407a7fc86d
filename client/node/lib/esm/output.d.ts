/** Audio output: WAV encoding of s16le PCM and atomic writes inside a chosen folder. */
/** A 44-byte RIFF/WAVE header for 16-bit PCM. */
export declare function wavHeader(pcmBytes: number, sampleRate: number, channels: number): Buffer;
/** A whole WAV file (header + PCM) in one buffer. */
export declare function toWav(pcm: Uint8Array, sampleRate: number, channels: number): Buffer;
/**
 * Write `parts` to `filePath` atomically: a temporary name in the same folder, fsync, rename.
 * A reader never sees a half-written file; on failure the temporary file is removed.
 */
export declare function writeFileAtomic(filePath: string, parts: readonly Uint8Array[]): Promise<void>;
