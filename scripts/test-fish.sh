#!/usr/bin/env bash
# Create or update the Fish Speech test venv (.venv-fish), make the tiny checkpoints, run tests/fish.
#
#   scripts/test-fish.sh [pytest args...]        e.g. scripts/test-fish.sh -k s1 -x
#
# Idempotent and cached: the venv is rebuilt only when this script or pyproject.toml changed (stamp file
# .venv-fish/.tts-fish-stamp); the tiny checkpoints are rebuilt only when their recipe changed.
# Env: FISH_VENV (default ROOT/.venv-fish), FISH_PYTHON (default python3.11), FISH_SKIP_TESTS=1 (setup only).
#
# Why a venv of its own: fish-speech 0.1.0 pins numpy<=1.26.4, pydantic==2.9.2, datasets==2.18.0 and pulls
# ~2.5 GB (gradio, wandb, lightning, transformers...). torch==2.13.0 is the CPU build on this machine's
# local wheel index; any other version pulls a multi-GB CUDA build, so it is installed first and pinned.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FISH_VENV:-$ROOT/.venv-fish}"
PYTHON="${FISH_PYTHON:-python3.11}"
TORCH_VERSION="2.13.0"
FISH_PACKAGES=("fish-speech==0.1.0" "fish-speech-lib==0.1.1.1" "soxr>=0.3")
STAMP_FILE="$VENV/.tts-fish-stamp"

log() { printf '[test-fish] %s\n' "$*" >&2; }

pip_quiet() {
    # This machine's pip config names extra local indexes that may be absent: drop those warnings only.
    "$VENV/bin/pip" "$@" 2>&1 | { grep -v "^WARNING: Location '" || true; }
}

stamp() {
    cat "${BASH_SOURCE[0]}" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1
}

ensure_portaudio() {
    # fish-speech depends on pyaudio, which builds from source against PortAudio's headers.
    if [ -e /usr/include/portaudio.h ]; then return 0; fi
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
        log "installing portaudio19-dev (needed to build pyaudio)"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq portaudio19-dev >/dev/null
    else
        log "portaudio19-dev is missing and cannot be installed here: pyaudio may fail to build"
    fi
}

fix_cpu_torchaudio() {
    # PyPI has no torchaudio built for CPU torch 2.13 (its newest, 2.11, is a CUDA build whose compiled
    # extension cannot load beside CPU torch). fish-speech imports torchaudio at module level (mel filters,
    # resampling: pure Python). Without its lib/*.so torchaudio runs as pure Python, which is all we need.
    if "$VENV/bin/python" -c "import torchaudio" >/dev/null 2>&1; then return 0; fi
    local libdir
    libdir="$("$VENV/bin/python" -c "import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec('torchaudio').origin).parent / 'lib')")"
    log "torchaudio's compiled extension does not load with this torch: disabling it in $libdir"
    for so in "$libdir"/*.so; do
        [ -e "$so" ] && mv "$so" "$so.disabled"
    done
    "$VENV/bin/python" -c "import torchaudio, torchaudio.functional, torchaudio.transforms"
}

install_venv() {
    local constraints
    constraints="$(mktemp)"
    trap 'rm -f "$constraints"' RETURN
    printf 'torch==%s\nnumpy==1.26.4\npydantic==2.9.2\n' "$TORCH_VERSION" > "$constraints"
    ensure_portaudio
    if [ ! -x "$VENV/bin/python" ]; then
        log "creating $VENV"
        "$PYTHON" -m venv "$VENV"
    fi
    log "installing torch==$TORCH_VERSION"
    pip_quiet install -q "torch==$TORCH_VERSION"
    log "installing ${FISH_PACKAGES[*]} (first time: a few minutes)"
    pip_quiet install -q "${FISH_PACKAGES[@]}" -c "$constraints"
    log "installing tts-broker (editable) with fish's pins"
    pip_quiet install -q -e "$ROOT[test]" -c "$constraints"
    fix_cpu_torchaudio
    stamp > "$STAMP_FILE"
}

cd "$ROOT"
if [ -f "$STAMP_FILE" ] && [ "$(cat "$STAMP_FILE")" = "$(stamp)" ] && [ -x "$VENV/bin/python" ]; then
    log "$VENV is up to date"
else
    install_venv
fi

"$VENV/bin/python" scripts/make_tiny_fish_checkpoints.py --out "$ROOT/.cache/fish-tiny"

if [ "${FISH_SKIP_TESTS:-0}" = "1" ]; then
    exit 0
fi
export TTS_FISH_TINY_DIR="$ROOT/.cache/fish-tiny"
# Our own code must work with the versions fish pins (pydantic 2.9.2, numpy 1.26.4): run the wire vectors too.
exec "$VENV/bin/python" -m pytest -p no:cacheprovider tests/fish tests/protocol/test_protocol_vectors.py "$@"
