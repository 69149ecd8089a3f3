#!/usr/bin/env bash
# What CI can check of the iOS package without a Swift toolchain:
#   1. the generated C header (ios/Headers/neuriteFFI.h) compiles as C11 with gcc;
#   2. every FFI function the generated Swift calls is declared in that header, and a C
#      program taking the address of each one links against the library;
#   3. the library's dynamic symbol table (nm -D) exports each of them.
#
#   bindings/check-header.sh LIB      (after bindings/generate.sh --lib LIB)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

lib="${1:?usage: $0 path/to/libneurite_ffi.so}"
header=ios/Headers/neuriteFFI.h
swift=ios/Sources/Neurite/neurite.swift
[ -f "$header" ] && [ -f "$swift" ] || { echo "check-header.sh: run bindings/generate.sh first" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

grep -oE '\b(uniffi|ffi)_neurite_ffi_[A-Za-z0-9_]+' "$swift" | sort -u >"$work/called"
count="$(wc -l <"$work/called")"
[ "$count" -gt 20 ] || { echo "check-header.sh: only $count FFI symbols found in $swift" >&2; exit 1; }

fail=0
# The nullability qualifiers are a clang extension (Swift's importer reads them); gcc gets
# them defined away, everything else in the header is plain C11.
{
    echo '#define _Nullable'
    echo '#define _Nonnull'
    echo "#include \"$PWD/$header\""
    echo 'const void *const called[] = {'
    sed 's/.*/    (const void *)\&&,/' "$work/called"
    echo '};'
    echo 'int main(void) { return called[0] == 0; }'
} >"$work/check.c"
gcc -std=c11 -Wall -Wextra -Werror -o "$work/check" "$work/check.c" \
    -L"$(dirname "$lib")" -l:"$(basename "$lib")" || fail=1

nm -D --defined-only "$lib" | awk '{print $NF}' | sort -u >"$work/exported"
missing="$(comm -23 "$work/called" "$work/exported")"
if [ -n "$missing" ]; then
    echo "check-header.sh: the Swift bindings call symbols the library does not export:" >&2
    echo "$missing" >&2
    fail=1
fi
[ "$fail" = 0 ] || exit 1
echo "C header check: $header compiles; $count FFI symbols the Swift code calls are declared and exported"
