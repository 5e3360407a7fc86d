/** tts-broker Node client: the TtsClient class, the seed-compatible module API, errors and protocol helpers. */
export { configure, createMessageChunks, generateAudio, getClient, getWorkerStatus, healthCheck, processMessageChunks, shutdownWorkerManager, writeWav, } from "./audioGenerator.js";
export { TtsClient, defaultBrokerUrl } from "./client.js";
export { CURVE_REFUSED, readKeyFile, resolveCurve } from "./curve.js";
export { AbortError, BatchFailedError, BrokerUnavailableError, ClosedError, InvalidArgumentError, JobFailedError, ProtocolError, RequestFailedError, TimeoutError, TtsError, } from "./errors.js";
export { JobStream } from "./jobStream.js";
export { lineJobId, makeJobId, outputFilename, resolveInside, safeNamePart } from "./naming.js";
export { toWav, wavHeader, writeFileAtomic } from "./output.js";
export { decodeMessage, encodeMessage, MalformedMessageError } from "./protocol/codec.js";
export { CLIENT_HEADER, Command, DEFAULT_FRONTEND, ErrorCode, PROTOCOL_VERSION, WORKER_HEADER, } from "./protocol/constants.js";
