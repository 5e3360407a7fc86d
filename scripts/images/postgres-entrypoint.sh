#!/bin/bash
# The entrypoint of scripts/images/Dockerfile.postgres: the parts of the official postgres image's entrypoint
# that deploy/compose.failover.yaml relies on.
#   - Started as root: make PGDATA and the socket folder the postgres user's, then run this script again as
#     postgres (setpriv); PostgreSQL refuses to run as root.
#   - First start (no PG_VERSION in PGDATA): initdb with POSTGRES_USER (default postgres) as the superuser and
#     POSTGRES_PASSWORD as its password (required), SCRAM for TCP from anywhere, trust on the container's own
#     unix socket; then POSTGRES_DB (default POSTGRES_USER) is created on a server that listens on no TCP port.
#   - Then `exec postgres "$@"`: the server is process 1 and gets docker's stop signal itself (SIGINT, the
#     image's STOPSIGNAL: fast shutdown). Port: PGPORT (default 5432); listen_addresses='*' unless an argument
#     says otherwise (-c listen_addresses=127.0.0.1 on a host network).
# Arguments starting with '-' go to postgres; any other command is run as it is (`bash`, `psql ...`), and so is
# `postgres --version` (or --help).
set -Eeuo pipefail

log() { printf 'postgres-entrypoint: %s\n' "$*" >&2; }

if [ "${1:0:1}" = '-' ]; then set -- postgres "$@"; fi
if [ "${1:-}" != postgres ]; then exec "$@"; fi
# `postgres --version` and the like print and exit: no data folder, no password needed (as the official image).
for arg in "${@:2}"; do
    case "$arg" in -'?'|--help|-V|--version) exec "$@" ;; esac
done

export PGDATA="${PGDATA:-/var/lib/postgresql/data}"
if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

if [ -s "$PGDATA/PG_VERSION" ]; then
    log "PostgreSQL database directory appears to contain a database; skipping initialization"
else
    user="${POSTGRES_USER:-postgres}"
    db="${POSTGRES_DB:-$user}"
    [ -n "${POSTGRES_PASSWORD:-}" ] || { log "POSTGRES_PASSWORD is not set: it is the password of $user"; exit 1; }
    log "initdb: superuser $user, database $db, in $PGDATA"
    initdb --username="$user" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") --auth-local=trust \
        --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 -D "$PGDATA" >/dev/null
    # initdb's host lines name 127.0.0.1 and ::1 only; the brokers connect from other containers.
    printf 'host all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
    printf "listen_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
    if [ "$db" != postgres ]; then
        pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w -s start
        psql -X -q -v ON_ERROR_STOP=1 -v db="$db" --username="$user" --dbname=postgres <<<'CREATE DATABASE :"db";'
        pg_ctl -D "$PGDATA" -m fast -w -s stop
    fi
    log "initialized; starting the server"
fi
exec postgres "${@:2}"
