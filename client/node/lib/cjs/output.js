"use strict";
/** Audio output: WAV encoding of s16le PCM and atomic writes inside a chosen folder. */
var __createBinding = (this && this.__createBinding) || (Object.create ? (function(o, m, k, k2) {
    if (k2 === undefined) k2 = k;
    var desc = Object.getOwnPropertyDescriptor(m, k);
    if (!desc || ("get" in desc ? !m.__esModule : desc.writable || desc.configurable)) {
      desc = { enumerable: true, get: function() { return m[k]; } };
    }
    Object.defineProperty(o, k2, desc);
}) : (function(o, m, k, k2) {
    if (k2 === undefined) k2 = k;
    o[k2] = m[k];
}));
var __setModuleDefault = (this && this.__setModuleDefault) || (Object.create ? (function(o, v) {
    Object.defineProperty(o, "default", { enumerable: true, value: v });
}) : function(o, v) {
    o["default"] = v;
});
var __importStar = (this && this.__importStar) || (function () {
    var ownKeys = function(o) {
        ownKeys = Object.getOwnPropertyNames || function (o) {
            var ar = [];
            for (var k in o) if (Object.prototype.hasOwnProperty.call(o, k)) ar[ar.length] = k;
            return ar;
        };
        return ownKeys(o);
    };
    return function (mod) {
        if (mod && mod.__esModule) return mod;
        var result = {};
        if (mod != null) for (var k = ownKeys(mod), i = 0; i < k.length; i++) if (k[i] !== "default") __createBinding(result, mod, k[i]);
        __setModuleDefault(result, mod);
        return result;
    };
})();
Object.defineProperty(exports, "__esModule", { value: true });
exports.wavHeader = wavHeader;
exports.toWav = toWav;
exports.writeFileAtomic = writeFileAtomic;
const node_crypto_1 = require("node:crypto");
const promises_1 = require("node:fs/promises");
const path = __importStar(require("node:path"));
const constants_js_1 = require("./protocol/constants.js");
const WAV_HEADER_BYTES = 44;
/** A 44-byte RIFF/WAVE header for 16-bit PCM. */
function wavHeader(pcmBytes, sampleRate, channels) {
    const blockAlign = channels * constants_js_1.BYTES_PER_SAMPLE;
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
    header.writeUInt16LE(constants_js_1.BYTES_PER_SAMPLE * 8, 34);
    header.write("data", 36, "ascii");
    header.writeUInt32LE(pcmBytes, 40);
    return header;
}
/** A whole WAV file (header + PCM) in one buffer. */
function toWav(pcm, sampleRate, channels) {
    return Buffer.concat([wavHeader(pcm.byteLength, sampleRate, channels), pcm]);
}
/**
 * Write `parts` to `filePath` atomically: a temporary name in the same folder, fsync, rename.
 * A reader never sees a half-written file; on failure the temporary file is removed.
 */
async function writeFileAtomic(filePath, parts) {
    const dir = path.dirname(filePath);
    await (0, promises_1.mkdir)(dir, { recursive: true });
    const tmp = path.join(dir, `.${path.basename(filePath)}.${(0, node_crypto_1.randomBytes)(6).toString("hex")}.tmp`);
    const handle = await (0, promises_1.open)(tmp, "wx", 0o644);
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
        await (0, promises_1.rename)(tmp, filePath);
    }
    catch (err) {
        await (0, promises_1.rm)(tmp, { force: true });
        throw err;
    }
}
