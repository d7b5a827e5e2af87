// swift-tools-version: 6.0
// Coverage-guided fuzzing of Medley's wire decoders (libFuzzer), kept out of the main
// package so its build never needs the fuzzer runtime. Build and run with scripts/fuzz.sh.
import PackageDescription

let package = Package(
    name: "MedleyFuzzTesting",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(name: "Medley", path: ".."),
    ],
    targets: [
        /// The process entry of a debug build: hands control to libFuzzer's driver.
        .target(name: "FuzzEntry"),
        /// libFuzzer entry point over the frame decoder, the protobuf-c message decoders and the control channel's decoder.
        .executableTarget(
            name: "FuzzFrameDecoder",
            dependencies: ["FuzzEntry", .product(name: "MedleyComm", package: "Medley"),
                           .product(name: "MedleyControl", package: "Medley")]
        ),
    ]
)
