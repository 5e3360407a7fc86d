#!/usr/bin/env bash
# Install what the dashboard test needs, then run it: Debian's chromium and playwright-core from npm.
#
#   scripts/test-dashboard.sh [pytest args...]
#
# chromium: `apt-get install -y chromium` when /usr/bin/chromium is missing (needs root; otherwise the test
# skips and says why). playwright-core: pinned below, installed with npm into .cache/playwright/ (git-ignored,
# so it stays out of the Node client's package.json and lockfile); playwright-core ships no browser, it drives
# the system chromium through executablePath. Env: DASHBOARD_SKIP_INSTALL=1 runs the test with what is there.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PLAYWRIGHT_VERSION="1.65.1"
PREFIX="$ROOT/.cache/playwright"
PY="${PYTHON:-$ROOT/.venv/bin/python}"

log() { printf '[test-dashboard] %s\n' "$*" >&2; }

if [ "${DASHBOARD_SKIP_INSTALL:-0}" != 1 ]; then
    if ! command -v chromium >/dev/null 2>&1; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            log "installing chromium (apt-get)"
            DEBIAN_FRONTEND=noninteractive apt-get install -y chromium >/dev/null \
                || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium >/dev/null; } \
                || log "could not install chromium; the test will skip"
        else
            log "chromium is missing and apt-get needs root: install it (apt-get install chromium); the test will skip"
        fi
    fi
    installed="$(cat "$PREFIX/node_modules/playwright-core/package.json" 2>/dev/null \
        | sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' | head -n1 || true)"
    if [ "$installed" != "$PLAYWRIGHT_VERSION" ]; then
        if command -v npm >/dev/null 2>&1; then
            log "installing playwright-core@$PLAYWRIGHT_VERSION into $PREFIX"
            mkdir -p "$PREFIX"
            [ -f "$PREFIX/package.json" ] || echo '{"private": true}' >"$PREFIX/package.json"
            npm install --prefix "$PREFIX" --no-audit --no-fund --no-save "playwright-core@$PLAYWRIGHT_VERSION" >/dev/null \
                || log "could not install playwright-core; the test will skip"
        else
            log "npm is missing; the test will skip"
        fi
    fi
fi

exec "$PY" -m pytest "$ROOT/tests/e2e/test_dashboard.py" -q "$@"
