#!/usr/bin/env bash
# Installs redis-server and rabbitmq-server from Debian's packages when they are missing (the bridges' tests,
# tests/bridge/, start throwaway instances of both on free loopback ports; they never use the system services).
#
# The packages' maintainer scripts would start the system services on the default ports (6379, 5672, 4369):
# a policy-rc.d that answers 101 ("action forbidden") keeps invoke-rc.d from starting them during the install,
# and any that started anyway (no invoke-rc.d, systemd present) are stopped afterwards.
set -euo pipefail

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || command -v rabbitmq-server >/dev/null 2>&1 || missing+=(rabbitmq-server)
if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install-queue-servers: ${missing[*]} missing and not root; install them with apt-get" >&2
    exit 1
fi

policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    own_policy=1
fi
cleanup() { if [ "$own_policy" -eq 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null

# Whatever started despite the policy (a systemd unit, the package's own epmd) is stopped: the tests run their
# own instances and must find the default ports free.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl stop redis-server rabbitmq-server epmd.socket epmd 2>/dev/null || true
    systemctl disable redis-server rabbitmq-server 2>/dev/null || true
else
    service redis-server stop >/dev/null 2>&1 || true
    service rabbitmq-server stop >/dev/null 2>&1 || true
fi
pkill -x -u rabbitmq epmd 2>/dev/null || true
echo "install-queue-servers: installed ${missing[*]}"
