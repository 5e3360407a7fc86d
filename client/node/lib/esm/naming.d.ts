/** Output file and job id naming shared with the Python client (PROTOCOL.md section 7). */
export declare const MAX_PART_CHARS = 64;
/** One component of a file name that cannot leave its folder or hide itself. */
export declare function safeNamePart(value: unknown): string;
/** `{streamIndex}_{id}.{ext}` with each part made safe. */
export declare function outputFilename(streamIndex: unknown, lineId: unknown, ext: string): string;
/** The absolute path of `fileName` inside `outputDir`; throws if it would resolve anywhere else. */
export declare function resolveInside(outputDir: string, fileName: string): string;
/** `{prefix}-{random hex}`: a fresh, valid job id. */
export declare function makeJobId(prefix?: string): string;
/** The job id generateAudio uses: `line-{streamIndex}-{id}-{random hex}`, as the Python client makes it. */
export declare function lineJobId(streamIndex: unknown, lineId: unknown): string;
