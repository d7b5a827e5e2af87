import Foundation
import MedleyAdapters
import MedleyCore

/// Paths and process helpers shared by Medley's tests.
public enum TestSupport {
    /// The repository root (found from this file's location).
    public static let repositoryRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()

    /// Directory of the build products (`medley`, the adapter libraries): where the test binary runs from.
    public static let productsDirectory: String = {
        let exe = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        var dir = exe.deletingLastPathComponent()
        // On macOS the tests run inside a .xctest bundle.
        while dir.path.contains(".xctest") { dir.deleteLastPathComponent() }
        return dir.path
    }()

    /// The built `medley` executable.
    public static var medleyExecutable: String { productsDirectory + "/medley" }

    /// A search path holding only the build products.
    public static var buildSearchPath: AdapterSearchPath { AdapterSearchPath(directories: [productsDirectory]) }

    /// A fresh temporary directory.
    public static func temporaryDirectory(_ prefix: String = "medley-test") throws -> String {
        let path = NSTemporaryDirectory() + "/\(prefix)-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// What a finished process did.
    public typealias ProcessResult = ChildProcess.Outcome

    /// Runs `executable` with `arguments`, killing it after `timeout` seconds.
    public static func run(
        _ executable: String, _ arguments: [String], environment: [String: String] = [:],
        timeout: TimeInterval = 120
    ) throws -> ProcessResult {
        try ChildProcess.run(executable, arguments, environment: environment, timeoutSeconds: timeout)
    }

    /// Runs the built `medley` with `arguments`.
    public static func medley(
        _ arguments: [String], environment: [String: String] = [:], timeout: TimeInterval = 120
    ) throws -> ProcessResult {
        try run(medleyExecutable, arguments, environment: environment, timeout: timeout)
    }

    /// Compiles C sources into a shared library with the system C compiler; returns its path.
    ///
    /// Paths are relative to the repository root. Used to build the adapter
    /// template exactly as docs/adapters.md tells a chip team to, and broken
    /// adapters for the loader's and checker's error paths.
    public static func buildSharedLibrary(
        named name: String, sources: [String], defines: [String] = [], into directory: String
    ) throws -> String {
        let output = directory + "/" + AdapterSearchPath.fileName(for: name)
        let root = repositoryRoot + "/"
        let arguments =
            ["-std=gnu11", "-O1", "-shared", "-fPIC", "-fvisibility=hidden",
             "-I\(root)adapters/include", "-I\(root)adapters/kit/include", "-I\(root)adapters/kernels/include"]
            + defines.map { "-D\($0)" } + sources.map { root + $0 } + ["-lm", "-o", output]
        let cc = ["/usr/bin/cc", "/usr/bin/gcc", "/usr/bin/clang"].first { FileManager.default.isExecutableFile(atPath: $0) }
        guard let cc else { throw TestSupportError("no C compiler found (cc, gcc or clang)") }
        let result = try run(cc, arguments, timeout: 120)
        guard result.status == 0 else {
            throw TestSupportError("cc failed for \(name): \(result.output)")
        }
        return output
    }

    /// The full adapter template, built as docs/adapters.md says.
    public static func templateAdapter(into directory: String) throws -> String {
        try buildSharedLibrary(
            named: "template",
            sources: ["adapters/template/template_adapter.c", "adapters/kit/medley_kit.c",
                      "adapters/kernels/medley_ref_kernels.c"],
            into: directory)
    }

    /// The sources of the device-memory template, in the order docs/adapters.md lists them.
    public static let devmemAdapterSources = [
        "adapters/template-devmem/devmem_adapter.c", "adapters/kit/medley_kit.c",
        "adapters/kernels/medley_ref_kernels.c",
    ]

    /// The device-memory template (`libmedley-adapter-devmem.so`), built as docs/adapters.md says.
    public static func devmemAdapter(into directory: String) throws -> String {
        try buildSharedLibrary(named: "devmem", sources: devmemAdapterSources, into: directory)
    }

    /// The sources of the minimal adapter template, in the order docs/adapters.md lists them.
    public static let minimalAdapterSources = [
        "adapters/template/minimal_adapter.c", "adapters/kit/medley_kit.c", "adapters/kernels/medley_ref_kernels.c",
    ]

    /// The minimal adapter template, built as docs/adapters.md says.
    public static func minimalAdapter(into directory: String) throws -> String {
        try buildSharedLibrary(named: "minimal", sources: minimalAdapterSources, into: directory)
    }

    /// A deliberately broken adapter (see Tests/Fixtures/adapters/broken_adapter.c for the kinds).
    public static func brokenAdapter(_ kind: String, into directory: String) throws -> String {
        if kind == "no-entry" {
            return try buildSharedLibrary(
                named: "broken-\(kind)", sources: ["Tests/Fixtures/adapters/no_entry.c"], into: directory)
        }
        let define = "BROKEN_" + kind.uppercased().replacingOccurrences(of: "-", with: "_")
        return try buildSharedLibrary(
            named: "broken-\(kind)",
            sources: ["Tests/Fixtures/adapters/broken_adapter.c", "adapters/kit/medley_kit.c",
                      "adapters/kernels/medley_ref_kernels.c"],
            defines: [define], into: directory)
    }
}

/// A failure of the test harness itself.
public struct TestSupportError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
