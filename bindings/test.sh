#!/usr/bin/env bash
# Checks the generated bindings against the host-built library, after `cargo test`:
#   1. the C header the Swift package uses (bindings/check-header.sh);
#   2. the Python bindings with pytest (bindings/python-test);
#   3. the Kotlin bindings on the JVM with Maven (android/jvm-test).
# It reuses the dev-profile libneurite_ffi that `cargo test` built (cargo leaves the cdylib of
# a tested library in target/debug/deps), so the workspace is never compiled twice; only the
# small uniffi-bindgen binary is built here.
#
#   bindings/test.sh        (CARGO_TARGET_DIR as for cargo; NEURITE_PYTHON: a venv's python)
# Needs gcc, nm, a Python venv (pytest is installed into it when missing), JDK 17 and mvn;
# Maven Central is reached on the first run only (Maven's local repository caches it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
python="${NEURITE_PYTHON:-python3}"
pytest_version=9.2.0

# The newest dev-profile cdylib: deps/ after `cargo test`, debug/ after `cargo build`.
lib=""
for candidate in "$target_dir/debug/deps/libneurite_ffi.so" "$target_dir/debug/libneurite_ffi.so"; do
    if [ -f "$candidate" ] && { [ -z "$lib" ] || [ "$candidate" -nt "$lib" ]; }; then
        lib="$candidate"
    fi
done
if [ -z "$lib" ]; then
    cargo build --locked -p neurite-ffi
    lib="$target_dir/debug/libneurite_ffi.so"
fi

bash bindings/generate.sh --lib "$lib"

echo "== C header of the Swift package"
bash bindings/check-header.sh "$lib"

echo "== Python bindings (pytest)"
if ! "$python" -c "import pytest, sys; sys.exit(pytest.__version__ != '$pytest_version')" 2>/dev/null; then
    "$python" -m pip install --disable-pip-version-check --no-input -q "pytest==$pytest_version"
fi
# The generated module loads libneurite_ffi from its own directory.
ln -sf "$lib" bindings/python-test/generated/libneurite_ffi.so
(cd bindings/python-test && timeout 600 "$python" -m pytest -p no:cacheprovider -v)

echo "== Kotlin bindings on the JVM (Maven)"
timeout 900 mvn -B -ntp -f android/jvm-test/pom.xml test -Dneurite.lib.dir="$(dirname "$lib")"
