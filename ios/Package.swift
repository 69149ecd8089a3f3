// swift-tools-version:5.9
// Neurite for iOS and macOS apps. Build the binary first (on macOS): ios/build-xcframework.sh
import PackageDescription

let package = Package(
    name: "Neurite",
    platforms: [.iOS(.v15), .macOS(.v12)],
    products: [
        .library(name: "Neurite", targets: ["Neurite"]),
    ],
    targets: [
        // The Rust library with the C header and module map (`neuriteFFI`) UniFFI generated.
        .binaryTarget(name: "NeuriteFFI", path: "Neurite.xcframework"),
        // The generated Swift API (`Homeserver`, `HomeserverConfig`, ...), from bindings/generate.sh.
        .target(name: "Neurite", dependencies: ["NeuriteFFI"], path: "Sources/Neurite"),
    ]
)
