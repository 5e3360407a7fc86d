#!/usr/bin/env bash
# Make the data of the Secrets in secrets.yaml: one folder per Secret, named after it, holding one file per key,
# named after the key, so that `kubectl create secret generic NAME --from-file=OUT/NAME/` makes each Secret.
#
#   deploy/kubernetes/make-secrets.sh OUT_DIR        (needs `tts` on PATH, or TTS=/path/to/tts)
#
# CURVE key pairs come from `tts keys generate` (docs/security.md): broker, admin, gateway, piper-worker,
# fish-worker; their public keys go to the allowlist Secrets (tts-curve-*), their pairs to the Secret of the pod
# that uses them, under the file name the manifests fix. Bearer tokens are 32 random bytes in hex. OUT_DIR must
# not exist (keys are never overwritten); it is made mode 0700. tts-broker-journal (failover only) is not made.
set -euo pipefail

if [ "$#" -ne 1 ]; then
    echo "usage: $0 OUT_DIR" >&2
    exit 2
fi
OUT="$1"
TTS="${TTS:-tts}"
if [ -e "$OUT" ]; then
    echo "$OUT exists: remove it first (keys are never overwritten)" >&2
    exit 1
fi
umask 077
mkdir -p "$OUT"
pairs="$(mktemp -d)"
trap 'rm -rf "$pairs"' EXIT

token() { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

# put SECRET KEY FILE: FILE becomes the key KEY of the Secret SECRET.
put() {
    mkdir -p "$OUT/$1"
    cp "$3" "$OUT/$1/$2"
    chmod 0600 "$OUT/$1/$2"
}

for name in broker admin gateway piper-worker fish-worker; do
    "$TTS" keys generate "$name" --dir "$pairs" >/dev/null
done

put tts-broker-curve broker.key_secret "$pairs/broker.key_secret"
put tts-broker-curve-public broker.key "$pairs/broker.key"
put tts-curve-clients gateway.key "$pairs/gateway.key"
put tts-curve-workers piper-worker.key "$pairs/piper-worker.key"
put tts-curve-workers fish-worker.key "$pairs/fish-worker.key"
put tts-curve-admins admin.key "$pairs/admin.key"
put tts-piper-worker-curve worker.key_secret "$pairs/piper-worker.key_secret"
put tts-fish-worker-curve worker.key_secret "$pairs/fish-worker.key_secret"
put tts-gateway-curve client.key_secret "$pairs/gateway.key_secret"
put tts-admin-curve admin.key_secret "$pairs/admin.key_secret"

scrape="$(token)"
mkdir -p "$OUT/tts-broker-http-tokens" "$OUT/tts-gateway-keys"
printf '%s\n' "$scrape" >"$OUT/tts-broker-http-tokens/tokens"
printf '%s' "$scrape" >"$OUT/tts-broker-http-tokens/scrape"
printf '%s\n' "$(token)" >"$OUT/tts-gateway-keys/keys"

echo "made the Secrets' data in $OUT; create them with:"
echo "  for dir in $OUT/*/; do kubectl -n tts create secret generic \"\$(basename \"\$dir\")\" --from-file=\"\$dir\" \\"
echo "      --dry-run=client -o yaml | kubectl -n tts apply -f -; done"
echo "the gateway's API key (give it to its HTTP clients): $OUT/tts-gateway-keys/keys"
