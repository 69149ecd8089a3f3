#!/usr/bin/env bash
# Generates the Swift, Kotlin and Python bindings of neurite-ffi in library mode: UniFFI reads
# the API description from the metadata symbols of a built (unstripped) libneurite_ffi.
#
#   bindings/generate.sh [--profile dev|release] [--lib PATH]
#
# Without --lib it builds the library for the host with the given profile (default dev);
# with --lib it uses that library as it is (bindings/test.sh passes the one `cargo test`
# built, so CI compiles nothing twice). Then it builds uniffi-bindgen (on its own: built
# together with other packages it would change their feature sets) and writes
#   ios/Sources/Neurite/neurite.swift         the Swift API (the `Neurite` target)
#   ios/Headers/                              neuriteFFI.h and module.modulemap (XCFramework)
#   android/src/main/kotlin/uniffi/neurite/   neurite.kt
#   bindings/python-test/generated/           neurite.py
# The generated sources are not committed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

profile=dev
lib=""
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) profile="$2"; shift 2 ;;
        --lib) lib="$2"; shift 2 ;;
        *) echo "usage: $0 [--profile dev|release] [--lib PATH]" >&2; exit 2 ;;
    esac
done

target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
case "$(uname -s)" in
    Darwin) ext=dylib ;;
    *) ext=so ;;
esac
if [ -z "$lib" ]; then
    cargo build --locked --profile "$profile" -p neurite-ffi
    dir="$profile"
    [ "$profile" = dev ] && dir=debug
    lib="$target_dir/$dir/libneurite_ffi.$ext"
fi
[ -f "$lib" ] || { echo "generate.sh: no library at $lib" >&2; exit 1; }

cargo build --locked -p uniffi-bindgen
bindgen="$target_dir/debug/uniffi-bindgen"

generate() {
    local language="$1" out="$2"
    rm -rf "$out"
    mkdir -p "$out"
    "$bindgen" generate --library "$lib" --language "$language" --out-dir "$out" --no-format >/dev/null
}

generate python bindings/python-test/generated
rm -rf android/src/main/kotlin/uniffi
generate kotlin android/build/generated-kotlin
mv android/build/generated-kotlin/uniffi android/src/main/kotlin/
rm -rf android/build/generated-kotlin
generate swift ios/build/generated-swift
# Swift package layout: the Swift source in the `Neurite` target; the C header and the module
# map travel inside the XCFramework (ios/build-xcframework.sh), where the Swift code imports
# them as the `neuriteFFI` module.
rm -rf ios/Sources/Neurite ios/Headers
mkdir -p ios/Sources/Neurite ios/Headers
mv ios/build/generated-swift/neurite.swift ios/Sources/Neurite/
mv ios/build/generated-swift/neuriteFFI.h ios/Headers/
mv ios/build/generated-swift/neuriteFFI.modulemap ios/Headers/module.modulemap
rm -rf ios/build/generated-swift
echo "generate.sh: bindings generated from $lib" >&2
