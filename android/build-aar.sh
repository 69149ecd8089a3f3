#!/usr/bin/env bash
# Builds the Android library (AAR): libneurite_ffi.so for arm64-v8a, armeabi-v7a and x86_64
# with cargo-ndk (small-release profile) into android/src/main/jniLibs, the Kotlin API from
# the host library, then the AAR with Gradle. Needs the Android SDK and NDK (ANDROID_HOME,
# ANDROID_NDK_HOME), Gradle 8.9 or newer, and:
#   cargo install cargo-ndk
#   rustup target add aarch64-linux-android armv7-linux-androideabi x86_64-linux-android
# Output: android/build/outputs/aar/neurite-release.aar
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Kotlin from the host library (unstripped, so UniFFI can read its metadata).
bash bindings/generate.sh --profile release

rm -rf android/src/main/jniLibs
# Only the shared library is built (`cargo rustc --crate-type cdylib`): with the static and
# Rust library types of ffi/Cargo.toml built alongside, the size-tuned profile gives a library
# about a third larger (bench/lib-size.sh measures this build on the host).
cargo ndk -t arm64-v8a -t armeabi-v7a -t x86_64 --platform 26 -o android/src/main/jniLibs \
    rustc --locked --profile small-release -p neurite-ffi --lib --crate-type cdylib

if [ -x android/gradlew ]; then
    (cd android && ./gradlew assembleRelease)
else
    gradle -p android assembleRelease
fi
ls -l android/build/outputs/aar/
