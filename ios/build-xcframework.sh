#!/usr/bin/env bash
# Builds ios/Neurite.xcframework (device, simulator and macOS static libraries) and the Swift
# sources. Run on macOS with Xcode and rustup:
#   rustup target add aarch64-apple-ios aarch64-apple-ios-sim x86_64-apple-ios aarch64-apple-darwin x86_64-apple-darwin
#   ios/build-xcframework.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
profile=small-release

# Bindings come from the host library (unstripped, so UniFFI can read its metadata).
bash bindings/generate.sh --profile release

for t in aarch64-apple-ios aarch64-apple-ios-sim x86_64-apple-ios aarch64-apple-darwin x86_64-apple-darwin; do
    # Only the static library, the type Xcode links (see bench/lib-size.sh for why one type).
    cargo rustc --locked --profile "$profile" -p neurite-ffi --lib --crate-type staticlib --target "$t"
done

lib() { echo "$target_dir/$1/$profile/libneurite_ffi.a"; }
mkdir -p ios/build
lipo -create "$(lib aarch64-apple-ios-sim)" "$(lib x86_64-apple-ios)" -output ios/build/libneurite_ffi-sim.a
lipo -create "$(lib aarch64-apple-darwin)" "$(lib x86_64-apple-darwin)" -output ios/build/libneurite_ffi-macos.a

rm -rf ios/Neurite.xcframework
xcodebuild -create-xcframework \
    -library "$(lib aarch64-apple-ios)" -headers ios/Headers \
    -library ios/build/libneurite_ffi-sim.a -headers ios/Headers \
    -library ios/build/libneurite_ffi-macos.a -headers ios/Headers \
    -output ios/Neurite.xcframework
echo "ios/Neurite.xcframework and ios/Sources/Neurite are ready: add ios/ as a local Swift package."
