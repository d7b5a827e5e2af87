import Foundation
import MedleyAdapters
import MedleyCore
import MedleyTestSupport
import Testing

/// adapters/template-devmem: the template for a chip whose memory is not host memory.
@Suite("Device-memory template")
struct DevmemTemplateTests {
    /// The error `body` throws, as text ("" when it succeeds).
    static func failure(_ body: () throws -> Void) -> String {
        do {
            try body()
            return ""
        } catch {
            return "\(error)"
        }
    }

    @Test("the device-memory template, built as the guide says, passes every check")
    func devmemPasses() throws {
        let path = try TestSupport.devmemAdapter(into: try TestSupport.temporaryDirectory())
        let report = ConformanceCheck(candidate: path, searchPath: TestSupport.buildSearchPath).run()
        #expect(report.passed, "\(report.table())")
        #expect(report.adapter == "devmem")
        let ops = Set(report.rows.filter { $0.group == "op" && $0.status == .pass }.map(\.item))
        #expect(ops == Set(AdapterABI.opset.map(\.name)))
        #expect(report.rows.filter { $0.status == .skip }.isEmpty, "it offers every optional entry")
    }

    @Test("the guide, the template's README and its header build it from the sources the test uses")
    func devmemIsDocumented() throws {
        let root = TestSupport.repositoryRoot
        let sources = TestSupport.devmemAdapterSources.joined(separator: " ")
        let command = sources + " -lm -o libmedley-adapter-devmem.so"
        for file in ["docs/adapters.md", "adapters/template-devmem/README.md", "adapters/template-devmem/devmem_adapter.c"] {
            let text = try String(contentsOfFile: root + "/" + file, encoding: .utf8)
            // As words, so that line continuations and the comment's leading '*' do not matter.
            let words = text.split(whereSeparator: \.isWhitespace).filter { $0 != "\\" && $0 != "*" }
                .joined(separator: " ")
            #expect(words.contains("cc -std=gnu11 -O2 -shared -fPIC -fvisibility=hidden"), "\(file): no build command")
            #expect(words.contains(command), "\(file) does not build the devmem template from \(sources)")
        }
        let guide = try String(contentsOfFile: root + "/docs/adapters.md", encoding: .utf8)
        #expect(guide.contains("## Adapters with device memory"))
        let header = try String(contentsOfFile: root + "/adapters/kit/include/medley_kit.h", encoding: .utf8)
        #expect(!header.contains("mk_op_check_shapes"))
        #expect(header.contains("template-devmem"))
    }

    @Test("a fault while a kernel runs is reported by the next synchronize, and stays on the stream")
    func asynchronousFault() throws {
        let path = try TestSupport.devmemAdapter(into: try TestSupport.temporaryDirectory())
        let library = try AdapterLibrary(path: path)
        let device = try library.openDevice(0, options: [("inject_fault_at_kernel", "2")])
        let x = try device.upload([Float](repeating: 1, count: 8))
        let out = try device.allocate(bytes: 32)
        // Both launches are queued: the fault of the second is not known yet.
        try device.launch("gelu_forward", inputs: [x.tensor(.f32, [8])], outputs: [out.tensor(.f32, [8])])
        try device.launch("gelu_forward", inputs: [x.tensor(.f32, [8])], outputs: [out.tensor(.f32, [8])])
        #expect(Self.failure { try device.synchronize() }.contains("device fault in kernel 2"))
        // Sticky: the next copy and the next synchronize report it again.
        #expect(Self.failure { _ = try out.read(Float.self, count: 8) }.contains("device fault"))
        #expect(Self.failure { try device.synchronize() }.contains("device fault"))
        try device.close()
    }

    @Test("work is queued until synchronize, in order; a buffer of another device is refused")
    func queuedAndChecked() throws {
        let path = try TestSupport.devmemAdapter(into: try TestSupport.temporaryDirectory())
        let library = try AdapterLibrary(path: path)
        let device = try library.openDevice(0)
        let other = try library.openDevice(0)
        let x = try device.upload([Float]([1, -2, 3, -4]))
        let out = try device.allocate(bytes: 16)
        try out.fill(byte: 0, offset: 0, bytes: 16)
        try device.launch("scale", inputs: [x.tensor(.f32, [4])], outputs: [out.tensor(.f32, [4])], attributes: ["alpha": 2])
        try device.launch("residual_forward", inputs: [out.tensor(.f32, [4]), x.tensor(.f32, [4])],
                          outputs: [out.tensor(.f32, [4])])
        #expect(try out.read(Float.self, count: 4) == [3, -6, 9, -12])
        let foreign = try other.allocate(bytes: 16)
        #expect(Self.failure {
            try device.launch("gelu_forward", inputs: [foreign.tensor(.f32, [4])], outputs: [out.tensor(.f32, [4])])
        }.contains("is not a live buffer of this device"))
        // Token ids written by queued work are checked once that work has run.
        let tokens = try device.upload([Int32]([0, 1]))
        let wte = try device.upload([Float](repeating: 0.5, count: 8))
        let encoded = try device.allocate(bytes: 32)
        try tokens.write([Int32]([0, 7]))
        let outside = Self.failure {
            try device.launch("encoder_forward", inputs: [tokens.tensor(.i32, [1, 2]), wte.tensor(.f32, [2, 4]),
                                                          wte.tensor(.f32, [2, 4])],
                              outputs: [encoded.tensor(.f32, [1, 2, 4])])
        }
        #expect(outside.contains("tokens[1] = 7 is outside [0, 2)"), "\(outside)")
        try other.close()
        try device.close()
    }
}
