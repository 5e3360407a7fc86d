#!/usr/bin/env bash
# Make a Debian bookworm base image from Debian's packages alone, for hosts that cannot pull python:3.11-slim:
# debootstrap a minimal system with python3 (3.11), python3-venv, libgomp1 (Piper's onnxruntime) and tini, strip
# the package caches and docs, and `docker import` it.
#   scripts/images/make-base.sh [TAG]        default TAG: tts-base:bookworm
# Builds on it pass --build-arg PIP_CERT=/etc/ssl/certs/ca-certificates.crt so pip uses the system trust store.
# Needs root, debootstrap and a running docker daemon (DOCKER_HOST is honoured). The root file system is kept as
# a tarball in ${TTS_IMAGE_CACHE:-~/.cache/tts-broker/images}, keyed by this script's content, so a second run
# imports it in seconds instead of bootstrapping again.
set -euo pipefail

TAG="${1:-tts-base:bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PACKAGES="python3,python3-venv,libgomp1,tini,ca-certificates"
CACHE="${TTS_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tts-broker/images}"
key="$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-12)"
tarball="$CACHE/bookworm-$key.tar"

log() { printf '[make-base] %s\n' "$*" >&2; }

if [ ! -s "$tarball" ]; then
    command -v debootstrap >/dev/null || { log "debootstrap is missing: apt-get install debootstrap"; exit 1; }
    mkdir -p "$CACHE"
    root="$(mktemp -d -t tts-base-XXXXXX)"
    # debootstrap mounts /proc and /sys inside the new root while it runs; unmount them whatever happens.
    cleanup() { umount -l "$root/proc" "$root/sys" 2>/dev/null || true; rm -rf "$root" "$tarball.$$.tmp"; }
    trap cleanup EXIT
    log "debootstrap bookworm ($PACKAGES) from $MIRROR"
    debootstrap --variant=minbase --include="$PACKAGES" bookworm "$root" "$MIRROR" >"$root.log" 2>&1 ||
        { tail -n 20 "$root.log" >&2; rm -f "$root.log"; exit 1; }
    rm -f "$root.log"
    umount -l "$root/proc" "$root/sys" 2>/dev/null || true
    # What an image does not need: apt's lists and downloaded .debs, docs, man pages, locales but C.UTF-8.
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
        "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*
    find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'C.*' -exec rm -rf {} + 2>/dev/null || true
    # The apt sources a container will use (the mirror we bootstrapped from, plus security updates).
    printf 'deb %s bookworm main\ndeb http://deb.debian.org/debian-security bookworm-security main\n' "$MIRROR" \
        >"$root/etc/apt/sources.list"
    # Extra CA certificates this host trusts (a TLS-inspecting proxy's, say) go into the base too, so that pip
    # inside `docker build` reaches PyPI the way the host does; the public python base has none of them.
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
        chroot "$root" update-ca-certificates >/dev/null
        log "added this host's CA certificates: $(cd /usr/local/share/ca-certificates && echo *.crt)"
    fi
    # A temporary name of this run's own, then an atomic rename: two runs that bootstrap at once (two worktrees'
    # image tests) each write their own file, and the tarball is always whole.
    tar --numeric-owner -C "$root" --exclude='./proc/*' --exclude='./sys/*' --exclude='./dev/*' \
        -cf "$tarball.$$.tmp" .
    mv "$tarball.$$.tmp" "$tarball"
    log "root file system: $(du -h "$tarball" | cut -f1) in $tarball"
fi

docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    "$tarball" "$TAG" >/dev/null
log "imported $TAG ($(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}'))"
