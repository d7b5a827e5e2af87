import Foundation
import Testing

/// The repository root, found from this file's path.
let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

@Suite("Generated protobuf-c code")
struct ProtoGenerationTests {
    @Test func committedCodeMatchesTheProto() throws {
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("medley-protos-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: tmp) }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/bash")
        p.arguments = [packageRoot.appendingPathComponent("scripts/gen-protos.sh").path, tmp.path]
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        try #require(p.terminationStatus == 0, "scripts/gen-protos.sh failed (is protoc-c installed? scripts/setup.sh)")
        for file in ["medley.pb-c.c", "include/medley.pb-c.h"] {
            let fresh = try Data(contentsOf: tmp.appendingPathComponent(file))
            let committed = try Data(contentsOf: packageRoot.appendingPathComponent("Sources/CMedleyProto/\(file)"))
            #expect(fresh == committed, "Sources/CMedleyProto/\(file) is stale: run scripts/gen-protos.sh and commit the result")
        }
    }
}
