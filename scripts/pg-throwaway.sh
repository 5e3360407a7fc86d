#!/usr/bin/env bash
# A throwaway PostgreSQL for trying the PostgreSQL journal by hand or for benchmarks/bench_failover.py:
# installs postgresql from Debian's packages when missing (root), runs initdb in a temporary folder as the
# `postgres` user, starts it on a free 127.0.0.1 port, prints a database URL for the `broker` role, and
# removes everything on Ctrl-C or SIGTERM.   Usage: scripts/pg-throwaway.sh
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
exec "${PYTHON:-$here/.venv/bin/python}" "$here/tests/pg_throwaway.py"
