#!/usr/bin/env bash
# The Node client as users install it, against a CURVE broker (issue 10):
#   1. a fresh npm project installs client/node from a folder copy as git holds it (no node_modules, no lib/:
#      its `prepare` installs the folder's dependencies and builds lib/), and both require() and import of it
#      run the seed API over CURVE; an unlisted key is refused clearly;
#      then the README's `npm run example` runs in that folder;
#   2. the same from the tarball `npm pack` makes (built by `prepack`).
# (`npm test` in client/node also checks the tarball itself: publint, are-the-types-wrong, both entries.)
# Needs npm and the npm registry (zeromq, @msgpack/msgpack); skips, saying why, when npm cannot install.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NODE_DIR="$ROOT/client/node"
PY="${TTS_PYTHON:-$ROOT/.venv/bin/python}"
WORK="$(mktemp -d -t tts-node-package-XXXXXX)"
PIDS=()

log() { printf '[test-node-package] %s\n' "$*" >&2; }
cleanup() {
    local code=$?
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ "$code" -ne 0 ]; then
        for f in "$WORK"/*.log; do [ -f "$f" ] && { echo "--- $f"; tail -n 30 "$f"; }; done
    fi
    rm -rf "$WORK"
    exit "$code"
}
trap cleanup EXIT

command -v npm >/dev/null || { log "SKIP: npm not found"; exit 0; }
NPM=(npm --no-audit --no-fund --loglevel=error)

if [ ! -x "$NODE_DIR/node_modules/typescript/bin/tsc" ]; then
    "${NPM[@]}" --prefix "$NODE_DIR" ci >/dev/null 2>"$WORK/npm-ci.log" || {
        log "SKIP: npm ci in client/node failed (no registry?): $(tail -n 3 "$WORK/npm-ci.log")"; exit 0; }
fi

# Keys, a CURVE broker and a tone worker.
KEYS="$WORK/keys"
for spec in "broker:broker" "app:clients" "gpu:workers" "stranger:elsewhere"; do
    "$ROOT/.venv/bin/tts" keys generate "${spec%%:*}" --dir "$KEYS/${spec##*:}" >/dev/null
done
"$PY" -m tts_broker --frontend "tcp://127.0.0.1:*" --backend "tcp://127.0.0.1:*" --no-journal --no-cache \
    --curve-secret "$KEYS/broker/broker.key_secret" --client-keys "$KEYS/clients" --worker-keys "$KEYS/workers" \
    --ready-file "$WORK/ready.json" >"$WORK/broker.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 200); do [ -s "$WORK/ready.json" ] && break; sleep 0.1; done
[ -s "$WORK/ready.json" ] || { log "FAIL: the broker did not start"; exit 1; }
FRONTEND="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["frontend"])' "$WORK/ready.json")"
BACKEND="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["backend"])' "$WORK/ready.json")"
"$PY" -m tts_worker --single --broker "$BACKEND" --engine tone --curve-secret "$KEYS/workers/gpu.key_secret" \
    --broker-key "$KEYS/broker/broker.key" >"$WORK/worker.log" 2>&1 &
PIDS+=($!)

run_seed() {  # $1: project folder, $2: label
    local out="$WORK/out-$2"
    (cd "$1" && cp "$NODE_DIR/test/package/seed-cjs.cjs" "$NODE_DIR/test/package/seed-esm.mjs" . &&
        timeout 120 node seed-cjs.cjs "$FRONTEND" "$KEYS/clients/app.key_secret" "$KEYS/broker/broker.key" "$out" &&
        timeout 120 node seed-esm.mjs "$FRONTEND" "$KEYS/clients/app.key_secret" "$KEYS/broker/broker.key" "$out" \
            "$KEYS/elsewhere/stranger.key_secret")
    log "$2: require() and import ran the seed API over CURVE; an unlisted key was refused"
}

fresh_project() {  # $1: folder, $2: what to install
    mkdir -p "$1"
    (cd "$1" && npm init -y >/dev/null && "${NPM[@]}" install "$2" >"$1.install.log" 2>&1) || {
        if grep -qiE "ENOTFOUND|ETIMEDOUT|EAI_AGAIN|ECONNREFUSED|network" "$1.install.log"; then
            log "SKIP: npm cannot reach its registry: $(tail -n 3 "$1.install.log")"; exit 0
        fi
        log "FAIL: npm install $2:"; cat "$1.install.log" >&2; exit 1
    }
}

# 1. A folder install from a plain checkout: the files git holds (no node_modules, dist or lib).
CHECKOUT="$WORK/checkout/client-node"
mkdir -p "$CHECKOUT"
(cd "$NODE_DIR" && tar --exclude=node_modules --exclude=dist --exclude=lib -cf - .) | tar -xf - -C "$CHECKOUT"
fresh_project "$WORK/from-folder" "$CHECKOUT"
run_seed "$WORK/from-folder" "folder install"
# The README's `npm run example`, in the folder that install prepared (no TypeScript step, no `tsc: not found`).
(cd "$CHECKOUT" && TTS_BROKER_URL="$FRONTEND" TTS_CLIENT_CURVE_SECRET="$KEYS/clients/app.key_secret" \
    TTS_CLIENT_BROKER_KEY="$KEYS/broker/broker.key" timeout 120 npm run example --silent -- "$WORK/out-example" \
    >"$WORK/example.log" 2>&1) || { log "FAIL: npm run example:"; cat "$WORK/example.log" >&2; exit 1; }
[ -s "$WORK/out-example/1_1.wav" ] || { log "FAIL: npm run example wrote no 1_1.wav"; cat "$WORK/example.log" >&2; exit 1; }
log "folder install: npm run example spoke through the broker"

# 2. The tarball npm pack makes.
TARBALL="$(cd "$WORK" && npm pack "$NODE_DIR" --loglevel=error 2>"$WORK/pack.log" | tail -n 1)"
[ -f "$WORK/$TARBALL" ] || { log "FAIL: npm pack made no tarball"; cat "$WORK/pack.log" >&2; exit 1; }
fresh_project "$WORK/from-tarball" "$WORK/$TARBALL"
run_seed "$WORK/from-tarball" "tarball install"
log "ok"
