import Foundation
import MedleyAdapters
import MedleyCore
import MedleyTestSupport
import Testing

/// adapters/opencl on PoCL (a real OpenCL runtime on this CPU): the check, device memory apart
/// from host memory, the kernel cache, and one clear line for each kind of bad input.
@Suite("OpenCL adapter", .serialized)
struct OpenCLAdapterTests {
    static let library = TestSupport.productsDirectory + "/" + AdapterSearchPath.fileName(for: "opencl")

    /// A fresh cache directory, so the kernel cache starts empty and stays out of the user's.
    static func cache() throws -> [String: String] {
        ["MEDLEY_CACHE_DIR": try TestSupport.temporaryDirectory("medley-opencl-cache")]
    }

    /// The error `body` throws, as text ("" when it succeeds).
    static func failure(_ body: () throws -> Void) -> String {
        do {
            try body()
            return ""
        } catch {
            return "\(error)"
        }
    }

    @Test("medley adapter check opencl passes with the default f32 tolerances, gradients included")
    func checkPasses() throws {
        let result = try TestSupport.medley(["adapter", "check", "opencl"], environment: try Self.cache(), timeout: 600)
        #expect(result.status == 0, "\(result.output)")
        #expect(result.output.contains("PASS"), "\(result.output)")
        #expect(!result.output.contains("FAIL"), "\(result.output)")
        // Finite differences on the adapter's own backward ops, not only on the reference's.
        let own = result.output.split(separator: "\n").filter { $0.hasPrefix("gradient") && $0.contains(" opencl ") && $0.contains("PASS") }
        #expect(own.count == 7, "the finite-difference rows on opencl: \(result.output)")
    }

    @Test("the kernel source compiled in is the generated one: kernels/generate.sh reproduces it byte for byte")
    func generatedSourceIsCurrent() throws {
        let root = TestSupport.repositoryRoot + "/adapters/opencl"
        let dir = try TestSupport.temporaryDirectory("medley-opencl-gen")
        try FileManager.default.createDirectory(atPath: dir + "/kernels", withIntermediateDirectories: true)
        for file in ["generate.sh", "opencl_kernels.cl"] {
            try FileManager.default.copyItem(atPath: root + "/kernels/" + file, toPath: dir + "/kernels/" + file)
        }
        let result = try TestSupport.run("/bin/sh", [dir + "/kernels/generate.sh"])
        #expect(result.status == 0, "\(result.output)")
        let fresh = try Data(contentsOf: URL(fileURLWithPath: dir + "/opencl_kernels_source.h"))
        let committed = try Data(contentsOf: URL(fileURLWithPath: root + "/opencl_kernels_source.h"))
        #expect(fresh == committed, "run sh adapters/opencl/kernels/generate.sh after editing the kernels")
    }

    @Test("device memory is apart from host memory: copies, offsets into a cl_mem, a d2d copy, a fill")
    func copiesAndOffsets() throws {
        let device = try AdapterLibrary(path: Self.library).openDevice(0)
        defer { try? device.close() }
        #expect(!device.description.name.isEmpty)
        #expect(device.description.memoryBytes > 0)
        let x = try device.upload([Float]([1, -2, 3, -4, 5, -6, 7, -8]))
        let out = try device.allocate(bytes: 64)
        try out.fill(byte: 0)
        // A view 12 bytes into each buffer: the kernel sees the offset, not a sub-buffer.
        try device.launch(
            "scale", inputs: [x.tensor(.f32, [4], offset: 12)], outputs: [out.tensor(.f32, [4], offset: 20)],
            attributes: ["alpha": 2])
        let values: [Float] = try out.read(count: 16)
        #expect(values == [0, 0, 0, 0, 0, -8, 10, -12, 14, 0, 0, 0, 0, 0, 0, 0])
        try out.copy(from: x, sourceOffset: 4, offset: 0, bytes: 8)
        #expect(try out.read(Float.self, count: 2) == [-2, 3])
        // Overlapping ranges of one buffer (OpenCL's own copy forbids it).
        try x.copy(from: x, sourceOffset: 0, offset: 4, bytes: 16)
        #expect(try x.read(Float.self, count: 6) == [1, 1, -2, 3, -4, -6])
    }

    @Test("bad input: one clear error each, nothing crashes")
    func badInput() throws {
        let library = try AdapterLibrary(path: Self.library)
        // An option naming a platform that does not exist: what was asked, and what there is.
        let platform = Self.failure { _ = try library.openDevice(0, options: [("platform", "nvidia")]) }
        #expect(platform.contains("platform") && platform.contains("nvidia") && platform.contains("Portable Computing Language"), "\(platform)")
        let unknown = Self.failure { _ = try library.openDevice(0, options: [("colour", "blue")]) }
        #expect(unknown.contains("colour") && unknown.contains("platform="), "\(unknown)")
        // Out of device memory.
        let small = try library.openDevice(0, options: [("memory", "1MiB")])
        defer { try? small.close() }
        let memory = Self.failure { _ = try small.allocate(bytes: 2 << 20) }
        #expect(memory.contains("OUT_OF_MEMORY") || memory.contains("out of memory"), "\(memory)")
        let huge = Self.failure { _ = try library.openDevice(0).allocate(bytes: 1 << 40) }
        #expect(huge.contains("out of memory") || huge.contains("OUT_OF_MEMORY"), "\(huge)")
        // A buffer of another device.
        let a = try library.openDevice(0), b = try library.openDevice(0)
        defer {
            try? a.close()
            try? b.close()
        }
        let x = try a.upload([Float](repeating: 1, count: 4))
        let out = try b.allocate(bytes: 16)
        let foreign = Self.failure {
            try b.launch("gelu_forward", inputs: [x.tensor(.f32, [4])], outputs: [out.tensor(.f32, [4])])
        }
        #expect(foreign.contains("not a live buffer of this device"), "\(foreign)")
        // A kernel file that does not build: the driver's log, shortened, in one error.
        let dir = try TestSupport.temporaryDirectory("medley-opencl")
        try "__kernel void scale(__global float *x) { x[0] = undefined_name; }\n"
            .write(toFile: dir + "/broken.cl", atomically: true, encoding: .utf8)
        let build = Self.failure { _ = try library.openDevice(0, options: [("kernels", dir + "/broken.cl"), ("cache", "off")]) }
        #expect(build.contains("build") && build.contains("undefined_name"), "\(build)")
        #expect(build.split(separator: "\n").count <= 4, "the build log is shortened: \(build)")
    }

    @Test("medley train on an opencl chip too small for the model, or on a platform that is not there: one Error: line")
    func trainRefuses() throws {
        let dir = try TestSupport.temporaryDirectory("medley-opencl-train")
        for (options, says) in [("{memory: 64KiB}", "has 64.0 KiB of memory but the model needs"),
                                ("{platform: nvidia}", "no such platform; platforms here: 0 'Portable Computing Language'")] {
            let job = dir + "/job.yaml"
            try """
                name: refused
                model: {layers: 2, dim: 32, heads: 2, seq: 32, batch: 4}
                train: {steps: 2}
                devices: [{adapter: opencl, options: \(options)}]
                """.write(toFile: job, atomically: true, encoding: .utf8)
            let result = try TestSupport.medley(["train", job], environment: try Self.cache())
            #expect(result.status != 0)
            let errors = result.output.split(separator: "\n").filter { $0.hasPrefix("Error:") }
            #expect(errors.count == 1 && errors[0].contains(says), "\(result.output)")
            #expect(!result.output.contains("Fatal error"), "\(result.output)")
        }
    }

    @Test("the kernels are built once per device and cached on disk; a corrupt cache entry is rebuilt")
    func kernelCache() throws {
        let environment = try Self.cache()
        let probe = ["adapter", "check", "opencl", "--op", "scale", "--in-process"]
        let first = try TestSupport.medley(probe, environment: environment, timeout: 300)
        #expect(first.status == 0, "\(first.output)")
        let dir = environment["MEDLEY_CACHE_DIR"]! + "/opencl"
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        #expect(entries.count == 1, "one cached program: \(entries)")
        for entry in entries {
            try Data("not a program binary".utf8).write(to: URL(fileURLWithPath: dir + "/" + entry))
        }
        let second = try TestSupport.medley(probe, environment: environment, timeout: 300)
        #expect(second.status == 0, "a corrupt cache entry is rebuilt, not an error: \(second.output)")
    }

    @Test("no OpenCL platform: adapters lists it with the reason, and check exits non-zero with that line")
    func noPlatform() throws {
        var environment = try Self.cache()
        environment["OCL_ICD_VENDORS"] = "/nonexistent"
        let listed = try TestSupport.medley(["adapters"], environment: environment)
        let line = listed.output.split(separator: "\n").first { $0.hasPrefix("opencl ") }.map(String.init) ?? ""
        #expect(line.contains("none here") && line.contains("no OpenCL platform"), "\(listed.output)")
        let check = try TestSupport.medley(["adapter", "check", "opencl"], environment: environment)
        #expect(check.status != 0)
        #expect(check.output.contains("no OpenCL platform"), "\(check.output)")
        #expect(!check.output.contains("Fatal error") && !check.output.contains("Backtrace"), "\(check.output)")
    }
}
