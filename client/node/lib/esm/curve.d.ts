/**
 * CURVE for the Node client (docs/security.md): the key options, pyzmq key files, and the clear error when
 * the broker refuses the key or when the zeromq native build has no CURVE.
 *
 * Keys are Z85 strings (40 characters). Give them directly (curveSecretKey, curvePublicKey, curveServerKey),
 * or give the files `tts keys generate` writes: curveSecretFile (NAME.key_secret, holds both keys of this
 * client) and curveServerKeyFile (the broker's NAME.key). Without options, TTS_CLIENT_CURVE_SECRET and
 * TTS_CLIENT_BROKER_KEY name those files, as for the Python client.
 */
/** What a peer reports when the broker's ZAP handler refused its key (same sentence in every client). */
export declare const CURVE_REFUSED = "CURVE handshake refused by the broker: is this key in its allowlist?";
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
/** Read `public-key = "..."` / `secret-key = "..."` from a pyzmq certificate file. */
export declare function readKeyFile(path: string): {
    publicKey: string;
    secretKey: string | undefined;
};
/** The keys from the options (or the environment), undefined when CURVE is off. */
export declare function resolveCurve(options: CurveOptions, env?: NodeJS.ProcessEnv): CurveKeys | undefined;
