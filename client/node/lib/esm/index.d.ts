/** tts-broker Node client: the TtsClient class, the seed-compatible module API, errors and protocol helpers. */
export { configure, createMessageChunks, generateAudio, getClient, getWorkerStatus, healthCheck, processMessageChunks, shutdownWorkerManager, writeWav, type BatchOptions, type GeneratorOptions, type VoiceMessage, } from "./audioGenerator.js";
export { TtsClient, defaultBrokerUrl } from "./client.js";
export { CURVE_REFUSED, readKeyFile, resolveCurve, type CurveKeys, type CurveOptions } from "./curve.js";
export { AbortError, BatchFailedError, BrokerUnavailableError, ClosedError, InvalidArgumentError, JobFailedError, ProtocolError, RequestFailedError, TimeoutError, TtsError, type TtsErrorCode, } from "./errors.js";
export { JobStream } from "./jobStream.js";
export { lineJobId, makeJobId, outputFilename, resolveInside, safeNamePart } from "./naming.js";
export { toWav, wavHeader, writeFileAtomic } from "./output.js";
export { decodeMessage, encodeMessage, MalformedMessageError, type Message } from "./protocol/codec.js";
export { CLIENT_HEADER, Command, DEFAULT_FRONTEND, ErrorCode, PROTOCOL_VERSION, WORKER_HEADER, type JobState, type Priority, } from "./protocol/constants.js";
export type * from "./types.js";
