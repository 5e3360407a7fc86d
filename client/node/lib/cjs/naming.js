"use strict";
/** Output file and job id naming shared with the Python client (PROTOCOL.md section 7). */
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
exports.MAX_PART_CHARS = void 0;
exports.safeNamePart = safeNamePart;
exports.outputFilename = outputFilename;
exports.resolveInside = resolveInside;
exports.makeJobId = makeJobId;
exports.lineJobId = lineJobId;
const node_crypto_1 = require("node:crypto");
const path = __importStar(require("node:path"));
const errors_js_1 = require("./errors.js");
exports.MAX_PART_CHARS = 64;
const MAX_JOB_ID_CHARS = 128;
// The `u` flag makes one astral character (an emoji) one `_`, as Python's re does per code point.
const UNSAFE = /[^A-Za-z0-9._-]/gu;
/** One component of a file name that cannot leave its folder or hide itself. */
function safeNamePart(value) {
    const text = String(value).replace(UNSAFE, "_").replace(/^\.+/, "").slice(0, exports.MAX_PART_CHARS);
    return text || "_";
}
/** `{streamIndex}_{id}.{ext}` with each part made safe. */
function outputFilename(streamIndex, lineId, ext) {
    return `${safeNamePart(streamIndex)}_${safeNamePart(lineId)}.${safeNamePart(ext)}`;
}
/** The absolute path of `fileName` inside `outputDir`; throws if it would resolve anywhere else. */
function resolveInside(outputDir, fileName) {
    const dir = path.resolve(outputDir);
    const full = path.resolve(dir, fileName);
    if (path.dirname(full) !== dir || path.basename(full) !== fileName) {
        throw new errors_js_1.InvalidArgumentError(`file name ${JSON.stringify(fileName)} would leave ${dir}`);
    }
    return full;
}
/** `{prefix}-{random hex}`: a fresh, valid job id. */
function makeJobId(prefix = "job") {
    const suffix = (0, node_crypto_1.randomBytes)(8).toString("hex");
    const head = safeNamePart(prefix).slice(0, MAX_JOB_ID_CHARS - suffix.length - 1);
    return `${head}-${suffix}`;
}
/** The job id generateAudio uses: `line-{streamIndex}-{id}-{random hex}`, as the Python client makes it. */
function lineJobId(streamIndex, lineId) {
    return makeJobId(`line-${safeNamePart(streamIndex).slice(0, 32)}-${safeNamePart(lineId)}`);
}
