#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs the third-party clients the interop tests
# drive (matrix-nio in a venv, matrix-js-sdk with npm), runs every Rust test (among them
# tests/tests/sdk_interop.rs, which builds and runs matrix-rust-sdk's check), then the
# C header of the Swift package and the generated Python and Kotlin (JVM) bindings against
# the library that build produced (bindings/test.sh).
# Extra arguments go to `cargo test` (e.g. `tests/run.sh -p neurite-tests`); with any, the
# bindings tests are skipped.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
python_line="$(bash tests/clients/install.sh | tail -n 1)"
export NEURITE_PYTHON="${python_line#NEURITE_PYTHON=}"

cargo test --workspace --locked "$@"

# The generated bindings against the library cargo test just built (skipped when the
# arguments pick a part of the workspace, which may not build that library).
if [ "$#" -eq 0 ]; then
    bash bindings/test.sh
fi
