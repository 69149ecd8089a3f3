#!/usr/bin/env bash
# Builds the phone library for this machine exactly as the Android and iOS scripts build it
# for phones (small-release profile, only the library type the platform links), and prints
# its size. `crate-type` in ffi/Cargo.toml lists cdylib, staticlib and lib for the bindings
# tests; building all three at once keeps the size-tuned profile from doing its work, so the
# shipped builds ask for one type with `cargo rustc --crate-type`.
#   bash bench/lib-size.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
cargo rustc --locked --profile small-release -p neurite-ffi --lib --crate-type cdylib
lib="$target_dir/small-release/libneurite_ffi.so"
bytes=$(stat -c %s "$lib")
echo "libneurite_ffi.so (small-release, cdylib only, $(uname -m)): $bytes bytes ($(awk "BEGIN {printf \"%.1f\", $bytes / 1048576}") MiB)"
