#!/usr/bin/env bash
# Installs the third-party Matrix clients used by the interop checks:
#   - matrix-nio (pinned in nio/requirements.txt) into a Python venv at
#     "${NEURITE_CACHE:-$HOME/.cache/neurite}/venv"
#   - matrix-js-sdk (pinned in js/package-lock.json) via `npm ci` in js/
# Idempotent: when both are already installed at the pinned versions it only
# checks and returns. Progress goes to stderr; the last line on stdout is
#   NEURITE_PYTHON=<python to run nio/chat.py with>
# Environment: NEURITE_CACHE (cache root), NEURITE_BASE_PYTHON (python used
# to create the venv, default python3).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${NEURITE_CACHE:-${HOME:?set HOME or NEURITE_CACHE}/.cache/neurite}"
venv="$cache/venv"
base_python="${NEURITE_BASE_PYTHON:-python3}"
requirements="$here/nio/requirements.txt"
js_dir="$here/js"

log() { echo "install.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

hash_of() { sha256sum "$@" | sha256sum | cut -d' ' -f1; }

mkdir -p "$cache"
# Serialise concurrent runs (e.g. several test processes installing at once).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$cache/install.lock"
    flock -w 600 9 || die "timed out waiting for $cache/install.lock"
fi

# ---------------------------------------------------------------- python ----
command -v "$base_python" >/dev/null 2>&1 || die "$base_python not found"
py_version="$("$base_python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
want_stamp="$(hash_of "$requirements")-py$py_version"
stamp_file="$venv/.neurite-requirements"

venv_ok() {
    [ -x "$venv/bin/python" ] &&
        [ -f "$stamp_file" ] &&
        [ "$(cat "$stamp_file")" = "$want_stamp" ] &&
        "$venv/bin/python" -c 'import nio, nio.crypto, sys; sys.exit(not nio.crypto.ENCRYPTION_ENABLED)' >/dev/null 2>&1
}

create_venv() {
    rm -rf "$venv"
    mkdir -p "$cache"
    if "$base_python" -m venv "$venv" >&2; then
        return 0
    fi
    rm -rf "$venv"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "venv creation failed; installing python3-venv with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2
        apt-get install -y -qq python3-venv >&2 ||
            apt-get install -y -qq "python$py_version-venv" >&2 ||
            die "could not install python3-venv"
        "$base_python" -m venv "$venv" >&2 || die "venv creation failed even after installing python3-venv"
    else
        die "'$base_python -m venv' failed; install the python3-venv package (needs root)"
    fi
}

if venv_ok; then
    log "matrix-nio venv up to date ($venv)"
else
    log "creating venv $venv and installing $(grep -m1 '^matrix-nio' "$requirements")"
    create_venv
    "$venv/bin/python" -m pip install --disable-pip-version-check --no-input -q \
        -r "$requirements" >&2 || die "pip install failed"
    "$venv/bin/python" -c 'import nio' || die "matrix-nio does not import after install"
    "$venv/bin/python" -c 'import nio.crypto, sys; sys.exit(not nio.crypto.ENCRYPTION_ENABLED)' ||
        die "matrix-nio has no encryption support after install (vodozemac missing?)"
    echo "$want_stamp" >"$stamp_file"
fi

# -------------------------------------------------------------------- js ----
command -v node >/dev/null 2>&1 || die "node not found (Node.js >= 20 is needed)"
command -v npm >/dev/null 2>&1 || die "npm not found"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 20 ] || die "Node.js >= 20 is needed, found $(node --version)"

js_want="$(hash_of "$js_dir/package.json" "$js_dir/package-lock.json")-node$node_major"
js_stamp="$js_dir/node_modules/.neurite-lock"
if [ -f "$js_stamp" ] && [ "$(cat "$js_stamp")" = "$js_want" ] &&
    [ -f "$js_dir/node_modules/matrix-js-sdk/package.json" ]; then
    log "matrix-js-sdk node_modules up to date"
else
    log "running npm ci in $js_dir"
    (cd "$js_dir" && npm ci --no-audit --no-fund >&2) || die "npm ci failed"
    echo "$js_want" >"$js_stamp"
fi

echo "NEURITE_PYTHON=$venv/bin/python"
