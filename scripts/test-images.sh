#!/usr/bin/env bash
# Build the CPU image and run it (run by `make test-extra`, so by `make test`; alone: `bash scripts/test-images.sh`).
#   1. Debian's docker.io, docker-compose and debootstrap, installed when missing (root; apt).
#   2. A docker daemon of this test's own: its own data root, socket and pid file in a temporary folder, with no
#      bridge network and no iptables rules (--bridge=none --iptables=false), so every build and container uses the
#      host network (--network host), binds 127.0.0.1 on free ports and never gets a private-range address.
#   3. The base image from Debian's packages (scripts/images/make-base.sh; cached as a tarball), the CPU image on it
#      (deploy/Dockerfile.cpu): its size, a non-root user, the commands, no compilers or pip caches; the
#      PostgreSQL image on the same base (scripts/images/Dockerfile.postgres, Debian's postgresql-15): its size.
#   4. `docker run`: a broker and two Piper workers; `tts say` from the host gets speech; `docker stop` of a busy
#      worker drains it (its job answered, the rest finished by the other worker), and one killed at once has its
#      job in hand finished by the other worker (scripts/images/drain_check.py).
#   5. The compose stack (deploy/compose.yaml with host-network addresses: scripts/images/hostnet_compose.py):
#      up, the OpenAI endpoint answers with speech, `down` and `up` with jobs in flight loses none
#      (scripts/images/jobs_survive.py).
#   6. The failover stack (deploy/compose.failover.yaml: two brokers on a PostgreSQL journal; its postgres service
#      on the image of step 3 instead of postgres:15, which cannot be pulled here): `docker stop` of PostgreSQL
#      with the brokers connected is a fast shutdown (exit 0 at once, no SIGKILL), it starts again on its volume
#      without a new initdb and a broker is active again; then one broker active, `docker kill -s KILL` of it with
#      jobs in flight, the standby takes over and every job is answered.
# Each step prints its time. A container still running 10 s after its stop began is named in a log line, and
# again when it stops (scripts/images/stop_watch.py): that is what makes a `down` take 30 s instead of 2.
# Two runs at once do not meet: each has its own daemon (data root, exec root, socket, pid file in its own mktemp
# folder), so its containers, images, volumes and networks are its own; host ports are free ones picked per run.
# Everything the test made (containers, volumes, images, the daemon and its data) is removed at the end, whatever
# happened; only the base tarball cache stays (~/.cache/tts-broker/images).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
TTS="$(dirname "$PY")/tts"
IMAGE=tts-broker:cpu-test
BASE=tts-test-base:bookworm
PG_IMAGE=tts-test-postgres:15
PROJECT="ttsimg$$"
WORK="$(mktemp -d -t tts-images-XXXXXX)"
export DOCKER_HOST="unix://$WORK/docker.sock"
T0=$(date +%s)
last=$T0

log() { printf '[test-images %4ss] %s\n' "$(( $(date +%s) - T0 ))" "$*" >&2; }
step() { local now; now=$(date +%s); log "ok   $1 ($(( now - last )) s)"; last=$now; }
fail() { log "FAIL $*"; exit 1; }
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

cleanup() {
    local code=$?
    if [ -n "${watch_pid:-}" ]; then kill "$watch_pid" 2>/dev/null || true; wait "$watch_pid" 2>/dev/null || true; fi
    if [ -S "$WORK/docker.sock" ]; then
        if [ "$code" -ne 0 ]; then
            for c in $(docker ps -aq 2>/dev/null); do
                log "--- logs of $(docker inspect -f '{{.Name}}' "$c" 2>/dev/null) (last 15 lines)"
                docker logs --tail 15 "$c" 2>&1 | sed 's/^/    /' >&2 || true
            done
        fi
        [ -f "$WORK/compose.yaml" ] && docker-compose -p "$PROJECT" -f "$WORK/compose.yaml" down -v -t 5 \
            >/dev/null 2>&1 || true
        [ -f "$WORK/failover.yaml" ] && POSTGRES_PASSWORD=unused docker-compose -p "${PROJECT}f" \
            -f "$WORK/failover.yaml" down -v -t 5 >/dev/null 2>&1 || true
        docker ps -aq | xargs -r docker rm -f >/dev/null 2>&1 || true
        docker volume ls -q | xargs -r docker volume rm -f >/dev/null 2>&1 || true
        docker images -q | xargs -r docker rmi -f >/dev/null 2>&1 || true
    fi
    local pid
    pid="$(cat "$WORK/dockerd.pid" 2>/dev/null || true)"
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    grep -o "$WORK/[^ ]*" /proc/mounts 2>/dev/null | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$WORK"
    exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- 1. packages ----------------------------------------------------------------------------------------------
[ "$(id -u)" = 0 ] || fail "needs root (it runs a docker daemon of its own); run it as root or under sudo"
[ -x "$PY" ] || fail "$PY not found: run 'make install' first"
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]} (Debian)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq "${missing[@]}" >/dev/null 2>&1 ||
        { apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null &&
          apt-get -o DPkg::Lock::Timeout=300 install -y -qq "${missing[@]}" >/dev/null; } ||
        fail "apt-get install ${missing[*]} failed"
fi
step "packages: dockerd $(dockerd --version | awk '{print $3}' | tr -d ,), docker-compose, debootstrap"

# ---- 2. a docker daemon of our own ----------------------------------------------------------------------------
dockerd --bridge=none --iptables=false --ip6tables=false --ip-masq=false --ip-forward=false \
    --data-root "$WORK/data" --exec-root "$WORK/exec" --pidfile "$WORK/dockerd.pid" \
    -H "$DOCKER_HOST" >"$WORK/dockerd.log" 2>&1 &
for _ in $(seq 1 300); do docker info >/dev/null 2>&1 && break; sleep 0.1; done
docker info >/dev/null 2>&1 || { tail -n 20 "$WORK/dockerd.log" >&2; fail "dockerd did not start"; }
step "dockerd (no bridge, no iptables, data root in $WORK)"
"$PY" "$ROOT/scripts/images/stop_watch.py" --after-s 10 --prefix "[test-images stop-watch]" &
watch_pid=$!

# ---- 3. images --------------------------------------------------------------------------------------------------
bash "$ROOT/scripts/images/make-base.sh" "$BASE"
step "base image $BASE from Debian packages"
build_started=$(date +%s)
DOCKER_BUILDKIT=0 docker build -q --network host --build-arg "BASE=$BASE" \
    --build-arg PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    -f "$ROOT/deploy/Dockerfile.cpu" -t "$IMAGE" "$ROOT" >"$WORK/build.log" 2>&1 ||
    { tail -n 30 "$WORK/build.log" >&2; fail "docker build deploy/Dockerfile.cpu"; }
size_mb=$(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f", $1/1e6}')
base_mb=$(docker image inspect -f '{{.Size}}' "$BASE" | awk '{printf "%.0f", $1/1e6}')
step "image $IMAGE built in $(( $(date +%s) - build_started )) s: ${size_mb} MB (base ${base_mb} MB)"

# What the image promises: a non-root user, the four commands, nothing of a build toolchain or a pip cache.
docker run --rm "$IMAGE" sh -c '
    set -e
    [ "$(id -u)" != 0 ] || { echo "runs as root"; exit 1; }
    for c in tts-broker tts-worker tts; do command -v "$c" >/dev/null || { echo "no $c"; exit 1; }; done
    tts-broker --version >/dev/null && tts-worker --list-engines | grep -q piper && tts gateway --help >/dev/null
    python -c "import psycopg, tts_bridge" || { echo "the postgres or bridges extra is missing"; exit 1; }
    for c in gcc cc g++ make pip; do ! command -v "$c" >/dev/null || { echo "$c is in the image"; exit 1; }; done
    [ ! -d "$HOME/.cache/pip" ] && [ ! -d /root/.cache/pip ] || { echo "a pip cache is in the image"; exit 1; }
    [ -w /var/lib/tts-broker/state ] || { echo "state volume not writable"; exit 1; }
' || fail "image contents"
health=$(docker image inspect -f '{{json .Config.Healthcheck.Test}}' "$IMAGE")
[ "$health" != "null" ] || fail "the image has no HEALTHCHECK"
step "image contents: non-root, tts-broker/tts-worker/tts/tts gateway, PostgreSQL journal and bridges, no compilers or pip, HEALTHCHECK $health"

build_started=$(date +%s)
DOCKER_BUILDKIT=0 docker build -q --network host --build-arg "BASE=$BASE" \
    -f "$ROOT/scripts/images/Dockerfile.postgres" -t "$PG_IMAGE" "$ROOT/scripts/images" >"$WORK/build-pg.log" 2>&1 ||
    { tail -n 30 "$WORK/build-pg.log" >&2; fail "docker build scripts/images/Dockerfile.postgres"; }
pg_mb=$(docker image inspect -f '{{.Size}}' "$PG_IMAGE" | awk '{printf "%.0f", $1/1e6}')
pg_version=$(docker run --rm "$PG_IMAGE" postgres --version)
step "image $PG_IMAGE built in $(( $(date +%s) - build_started )) s: ${pg_mb} MB ($pg_version; base ${base_mb} MB)"

# ---- 4. docker run: a broker and two Piper workers --------------------------------------------------------------
FRONT=$(free_port); BACK=$(free_port)
URL="tcp://127.0.0.1:$FRONT"
run_started=$(date +%s)
docker volume create "$PROJECT-state" >/dev/null
docker run -d --name "$PROJECT-broker" --network host -v "$PROJECT-state:/var/lib/tts-broker/state" \
    -e TTS_FRONTEND="$URL" -e TTS_BACKEND="tcp://127.0.0.1:$BACK" -e TTS_BROKER_URL="$URL" "$IMAGE" >/dev/null
for n in 1 2; do
    docker run -d --name "$PROJECT-w$n" --network host -e TTS_WORKER_BROKER="tcp://127.0.0.1:$BACK" \
        -e TTS_BROKER_URL="$URL" -e TTS_WORKER_NAME="w$n" "$IMAGE" tts-worker --single --engine piper >/dev/null
done
for _ in $(seq 1 240); do "$TTS" --broker "$URL" --timeout-s 2 health >/dev/null 2>&1 && break; sleep 0.5; done
"$TTS" --broker "$URL" --timeout-s 5 health >/dev/null || fail "no Piper worker registered in 120 s"
step "docker run: broker + 2 Piper workers serving in $(( $(date +%s) - run_started )) s"

"$TTS" --broker "$URL" say "Hello from a container built from Debian packages." --output-dir "$WORK/out" \
    >"$WORK/say.txt" || fail "tts say"
"$PY" - "$WORK/out" <<'PY' || fail "tts say wrote no speech"
import sys, pathlib, numpy as np, soundfile as sf
files = sorted(pathlib.Path(sys.argv[1]).glob("*.wav"))
assert len(files) == 1, files
audio, rate = sf.read(files[0], dtype="int16")
assert rate == 22050 and len(audio) / rate > 1.0, (rate, len(audio))
assert np.abs(audio).max() > 1000, "silent"
print(f"[test-images] tts say: {files[0].name}, {len(audio) / rate:.2f} s at {rate} Hz", file=sys.stderr)
PY
step "tts say from the host got speech"

"$PY" "$ROOT/scripts/images/drain_check.py" --broker "$URL" --container "$PROJECT-w1" --worker-name w1 ||
    fail "docker stop did not drain the worker"
step "docker stop of a busy worker: drained, its job answered, the rest done by the other worker"
docker start "$PROJECT-w1" >/dev/null
"$PY" "$ROOT/scripts/images/drain_check.py" --broker "$URL" --container "$PROJECT-w1" --worker-name w1 \
    --stop-timeout-s 0 --expect killed || fail "a killed worker's job was not finished by the other one"
step "docker stop -t 0 (SIGKILL) of a busy worker: its job requeued and finished by the other worker"
docker rm -f "$PROJECT-broker" "$PROJECT-w1" "$PROJECT-w2" >/dev/null

# ---- 5. the compose stack ---------------------------------------------------------------------------------------
CFRONT=$(free_port); CBACK=$(free_port); CGATE=$(free_port); CHTTP=$(free_port)
"$PY" "$ROOT/scripts/images/hostnet_compose.py" "$ROOT/deploy/compose.yaml" "$WORK/compose.yaml" --image "$IMAGE" \
    --port "5555=$CFRONT" --port "5556=$CBACK" --port "8000=$CGATE" --port "9464=$CHTTP" >/dev/null
COMPOSE="docker-compose -p $PROJECT -f $WORK/compose.yaml"
compose_started=$(date +%s)
$COMPOSE up -d >"$WORK/compose-up.log" 2>&1 || { cat "$WORK/compose-up.log" >&2; fail "compose up"; }
CURL="tcp://127.0.0.1:$CFRONT"
for _ in $(seq 1 240); do
    curl -sf "http://127.0.0.1:$CGATE/health" >/dev/null 2>&1 && "$TTS" --broker "$CURL" --timeout-s 2 health \
        >/dev/null 2>&1 && break
    sleep 0.5
done
workers=$("$TTS" --broker "$CURL" status --json | "$PY" -c 'import json,sys; print(len(json.load(sys.stdin)["workers"]))')
[ "$workers" = 2 ] || fail "compose: $workers Piper workers registered, wanted 2"
step "compose up: broker, 2 Piper workers, gateway serving in $(( $(date +%s) - compose_started )) s"

code=$(curl -s -o "$WORK/speech.wav" -w '%{http_code}' "http://127.0.0.1:$CGATE/v1/audio/speech" \
    -H 'content-type: application/json' \
    -d '{"model":"tts-1","voice":"alloy","input":"Hello from the compose stack.","response_format":"wav"}')
[ "$code" = 200 ] || fail "POST /v1/audio/speech answered $code"
"$PY" -c 'import sys, soundfile as sf; i = sf.info(sys.argv[1]); assert i.frames > i.samplerate, i' "$WORK/speech.wav" ||
    fail "the gateway's WAV holds under a second of audio"
step "the OpenAI endpoint answered with speech"
# Each worker container's healthcheck, run as dockerd runs it (CMD-SHELL: sh -c): its ready file is fresh because
# the broker answers it. (dockerd's own first check comes only after the 15 s interval.)
for container in $($COMPOSE ps -q piper-worker); do
    check=$(docker inspect -f '{{json .Config.Healthcheck.Test}}' "$container" | "$PY" -c '
import json, sys; test = json.load(sys.stdin); print(test[1] if test[0] == "CMD-SHELL" else "")')
    [ -n "$check" ] || fail "compose: worker container $container has no CMD-SHELL healthcheck"
    for _ in $(seq 1 40); do docker exec "$container" sh -c "$check" && break; sleep 0.5; done
    docker exec "$container" sh -c "$check" || fail "compose: the healthcheck of worker container $container fails"
done
step "compose: each Piper worker's healthcheck passes (its ready file: the broker answers it)"

"$PY" "$ROOT/scripts/images/jobs_survive.py" --broker "$CURL" --jobs 6 "$COMPOSE down" "$COMPOSE up -d" ||
    fail "jobs lost across compose down/up"
step "compose down and up with 6 jobs in flight: every job answered"
$COMPOSE down -v >/dev/null 2>&1 || fail "compose down"
step "compose down"

# ---- 6. the failover stack --------------------------------------------------------------------------------------
FFRONT=$(free_port); FBACK=$(free_port); FGATE=$(free_port); FHTTP_A=$(free_port); FHTTP_B=$(free_port)
FPG=$(free_port)
"$PY" "$ROOT/scripts/images/hostnet_compose.py" "$ROOT/deploy/compose.failover.yaml" "$WORK/failover.yaml" \
    --image "$IMAGE" --postgres-image "$PG_IMAGE" --port "5555=$FFRONT" --port "5556=$FBACK" --port "8000=$FGATE" \
    --port "9464=$FHTTP_A" --port "5432=$FPG" --service-port "broker-b:9464=$FHTTP_B" >/dev/null
POSTGRES_PASSWORD="$("$PY" -c 'import secrets; print(secrets.token_hex(12))')"
export POSTGRES_PASSWORD
FCOMPOSE="docker-compose -p ${PROJECT}f -f $WORK/failover.yaml"
failover_started=$(date +%s)
$FCOMPOSE up -d >"$WORK/failover-up.log" 2>&1 || { cat "$WORK/failover-up.log" >&2; fail "failover compose up"; }
FURL="tcp://127.0.0.1:$FFRONT"
for _ in $(seq 1 240); do "$TTS" --broker "$FURL" --timeout-s 2 health >/dev/null 2>&1 && break; sleep 0.5; done
"$TTS" --broker "$FURL" --timeout-s 5 health >/dev/null || fail "failover stack: no Piper worker serving"
step "failover stack up: PostgreSQL, two brokers, 2 Piper workers serving in $(( $(date +%s) - failover_started )) s"

# PostgreSQL's stop with the brokers connected: SIGINT (the image's STOPSIGNAL, fast shutdown) ends the sessions
# and exits 0 at once; SIGTERM (smart shutdown) would wait for the brokers to let go, until SIGKILL (exit 137).
PG_CONTAINER="${PROJECT}f_postgres_1"
# The epoch of the broker that answers at the client port (a standby binds none; 0: none answers).
epoch() { "$TTS" --broker "$FURL" --timeout-s 2 status --json 2>/dev/null | "$PY" -c '
import json, sys; d = json.load(sys.stdin); print(int(d.get("epoch") or 0))' \
    2>/dev/null || echo 0; }
epoch_before=$(epoch)
[ "$epoch_before" -gt 0 ] || fail "failover stack: the active broker reports no epoch"
stop_started=$(date +%s%N)
docker stop -t 20 "$PG_CONTAINER" >/dev/null
stop_ms=$(( ($(date +%s%N) - stop_started) / 1000000 ))
pg_exit=$(docker inspect -f '{{.State.ExitCode}}' "$PG_CONTAINER")
[ "$pg_exit" = 0 ] && [ "$stop_ms" -lt 10000 ] ||
    fail "docker stop of PostgreSQL with the brokers connected: exit $pg_exit after $stop_ms ms (wanted 0, fast)"
docker start "$PG_CONTAINER" >/dev/null
for _ in $(seq 1 100); do docker exec "$PG_CONTAINER" pg_isready -q -U broker -d tts && break; sleep 0.2; done
docker exec "$PG_CONTAINER" psql -X -qtA -U broker -d tts -c 'select 1' >/dev/null ||
    fail "PostgreSQL did not come back on its volume"
[ "$(docker logs "$PG_CONTAINER" 2>&1 | grep -c 'postgres-entrypoint: initdb')" = 1 ] ||
    fail "PostgreSQL ran initdb again on its second start"
step "docker stop of PostgreSQL with the brokers connected: exit 0 in $stop_ms ms (fast shutdown);\
 started again on its volume, no second initdb"
# Every broker lost its journal session: the active one regains its own (the same epoch) or steps down and the
# standby takes over (a higher epoch), within a lease (3 s). Wait until the broker at the client port has Piper
# workers and the same epoch four times in a row, a second apart: one that is about to step down has not settled.
settled=0; seen=-1
for _ in $(seq 1 120); do
    now_epoch=0
    "$TTS" --broker "$FURL" --timeout-s 2 health >/dev/null 2>&1 && now_epoch=$(epoch)
    if [ "$now_epoch" -ge "$epoch_before" ] && [ "$now_epoch" = "$seen" ]; then settled=$(( settled + 1 ))
    else settled=0; fi
    seen=$now_epoch
    [ "$settled" -ge 3 ] && break
    sleep 1
done
[ "$settled" -ge 3 ] || fail "no broker settled as active with Piper workers after PostgreSQL came back"
step "after PostgreSQL came back: a broker active at epoch $seen (was $epoch_before), Piper workers serving"

healthz() { curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/healthz" || true; }
a=$(healthz "$FHTTP_A"); b=$(healthz "$FHTTP_B")
if [ "$a" = 200 ] && [ "$b" != 200 ]; then active=broker-a; standby_http=$FHTTP_B
elif [ "$b" = 200 ] && [ "$a" != 200 ]; then active=broker-b; standby_http=$FHTTP_A
else fail "failover stack: /healthz answered $a (broker-a) and $b (broker-b): wanted exactly one 200"; fi
step "failover stack: $active active, the other standing by"
"$PY" "$ROOT/scripts/images/jobs_survive.py" --broker "$FURL,$FURL" --jobs 6 \
    "docker kill -s KILL ${PROJECT}f_${active}_1" || fail "jobs lost when the active broker was killed"
[ "$(healthz "$standby_http")" = 200 ] || fail "the standby did not become active"
step "docker kill of the active broker with 6 jobs in flight: the standby took over, every job answered"

$FCOMPOSE down -v >/dev/null 2>&1 || fail "failover compose down"
step "failover compose down"
log "all image checks passed in $(( $(date +%s) - T0 )) s"
