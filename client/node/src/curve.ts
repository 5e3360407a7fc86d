/**
 * CURVE for the Node client (docs/security.md): the key options, pyzmq key files, and the clear error when
 * the broker refuses the key or when the zeromq native build has no CURVE.
 *
 * Keys are Z85 strings (40 characters). Give them directly (curveSecretKey, curvePublicKey, curveServerKey),
 * or give the files `tts keys generate` writes: curveSecretFile (NAME.key_secret, holds both keys of this
 * client) and curveServerKeyFile (the broker's NAME.key). Without options, TTS_CLIENT_CURVE_SECRET and
 * TTS_CLIENT_BROKER_KEY name those files, as for the Python client.
 */

import { readFileSync } from "node:fs";

import { capability } from "zeromq";

import { InvalidArgumentError } from "./errors.js";

/** What a peer reports when the broker's ZAP handler refused its key (same sentence in every client). */
export const CURVE_REFUSED = "CURVE handshake refused by the broker: is this key in its allowlist?";

/** CURVE options of TtsClientOptions. */
export interface CurveOptions {
  /** This client's secret key (Z85). With curvePublicKey and curveServerKey, turns CURVE on. */
  curveSecretKey?: string;
  /** This client's public key (Z85). */
  curvePublicKey?: string;
  /** The broker's public key (Z85). */
  curveServerKey?: string;
  /** Instead of the two keys above: this client's NAME.key_secret file (pyzmq certificate format). */
  curveSecretFile?: string;
  /** Instead of curveServerKey: the broker's NAME.key file. */
  curveServerKeyFile?: string;
}

/** The three keys a CURVE client socket needs. */
export interface CurveKeys {
  curveSecretKey: string;
  curvePublicKey: string;
  curveServerKey: string;
}

const Z85_KEY = /^[0-9a-zA-Z.\-:+=^!/*?&<>()[\]{}@%$#]{40}$/;

/** Read `public-key = "..."` / `secret-key = "..."` from a pyzmq certificate file. */
export function readKeyFile(path: string): { publicKey: string; secretKey: string | undefined } {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new InvalidArgumentError(`cannot read CURVE key file ${path}: ${(err as Error).message}`, { cause: err });
  }
  const field = (name: string): string | undefined => new RegExp(`^\\s*${name}\\s*=\\s*"([^"]{40})"`, "m").exec(text)?.[1];
  const publicKey = field("public-key");
  if (publicKey === undefined) throw new InvalidArgumentError(`${path} is not a CURVE certificate file (no public-key line)`);
  return { publicKey, secretKey: field("secret-key") };
}

/** The keys from the options (or the environment), undefined when CURVE is off. */
export function resolveCurve(options: CurveOptions, env: NodeJS.ProcessEnv = process.env): CurveKeys | undefined {
  let { curveSecretKey, curvePublicKey, curveServerKey } = options;
  const secretFile = options.curveSecretFile ?? (curveSecretKey === undefined ? env["TTS_CLIENT_CURVE_SECRET"] : undefined);
  const serverFile = options.curveServerKeyFile ?? (curveServerKey === undefined ? env["TTS_CLIENT_BROKER_KEY"] : undefined);
  if (secretFile) {
    const pair = readKeyFile(secretFile);
    if (pair.secretKey === undefined) {
      throw new InvalidArgumentError(`${secretFile} holds no secret key (give NAME.key_secret, not NAME.key)`);
    }
    curveSecretKey = pair.secretKey;
    curvePublicKey = pair.publicKey;
  }
  if (serverFile) curveServerKey = readKeyFile(serverFile).publicKey;
  const given = [curveSecretKey, curvePublicKey, curveServerKey].filter((k) => k !== undefined && k !== "");
  if (given.length === 0) return undefined;
  if (given.length !== 3) {
    throw new InvalidArgumentError(
      "CURVE needs this client's secret and public keys and the broker's public key " +
        "(curveSecretKey + curvePublicKey + curveServerKey, or curveSecretFile + curveServerKeyFile)",
    );
  }
  for (const [name, key] of Object.entries({ curveSecretKey, curvePublicKey, curveServerKey })) {
    if (!Z85_KEY.test(key!)) throw new InvalidArgumentError(`${name} is not a 40-character Z85 key`);
  }
  if (!capability.curve) {
    throw new InvalidArgumentError(
      "CURVE options were given but this zeromq native build has no CURVE support (zmq.capability.curve is " +
        "false): reinstall zeromq with its prebuilt binary, or build libzmq with libsodium/tweetnacl",
    );
  }
  return { curveSecretKey: curveSecretKey!, curvePublicKey: curvePublicKey!, curveServerKey: curveServerKey! };
}
