import Foundation
import MedleyCore
import MedleyTestSupport
import Testing

@testable import MedleyAdapters

/// The sim adapter stands in for other vendors' chips: every option and fault kind is exercised.
@Suite("Sim adapter")
struct SimAdapterTests {
    let library: AdapterLibrary

    init() throws {
        library = try AdapterLibrary.load("sim", searchPath: TestSupport.buildSearchPath)
    }

    /// Runs gelu_forward on `device` over `x` and returns the output.
    private func gelu(_ device: Device, _ x: [Float]) throws -> [Float] {
        let input = try device.upload(x)
        let out = try device.allocate(bytes: 4 * x.count)
        try device.launch("gelu_forward", inputs: [input.tensor(.f32, [x.count])], outputs: [out.tensor(.f32, [x.count])])
        return try out.read(count: x.count)
    }

    private var sample: [Float] {
        var rng = SeededGenerator(seed: 3)
        return rng.floats(257, -3, 3)
    }

    private func reference(_ x: [Float]) throws -> [Float] {
        try gelu(try AdapterLibrary.load("reference", searchPath: TestSupport.buildSearchPath).openDevice(0), x)
    }

    @Test("with defaults the sim is bit-identical to the reference")
    func identicalToReference() throws {
        #expect(try gelu(try library.openDevice(0), sample) == reference(sample))
    }

    /// Runs every op of opset v1 on the conformance kit's cases (both size families) on the sim
    /// with `kernels=<kernels>` and on the adapter of the same name, and returns each op whose
    /// outputs differ in any bit.
    private func bitwiseDifferences(kernels: String) throws -> [String] {
        func open(_ adapter: String) throws -> OpRunner {
            OpRunner(device: try AdapterLibrary.load(adapter, searchPath: TestSupport.buildSearchPath).openDevice(0))
        }
        let sim = OpRunner(device: try library.openDevice(0, options: [("kernels", kernels)]))
        let other = try open(kernels)
        let reference = try open("reference")
        var builder = OpCaseBuilder(rng: SeededGenerator(seed: 11)) { op, ins, outs, attrs in
            var local = SeededGenerator(seed: 1)
            return try reference.run(op, inputs: ins, outputs: outs, attributes: attrs, offsets: &local).outputs
        }
        var differing: [String] = []
        for op in AdapterABI.opset {
            for c in try builder.cases(for: op.name) {
                // The same placements on both devices, so only the kernels can differ.
                var simOffsets = SeededGenerator(seed: 5), otherOffsets = SeededGenerator(seed: 5)
                let got = try sim.run(
                    c.op, inputs: c.inputs, outputs: c.outputs, attributes: c.attributes, offsets: &simOffsets)
                let want = try other.run(
                    c.op, inputs: c.inputs, outputs: c.outputs, attributes: c.attributes, offsets: &otherOffsets)
                #expect(got.violations.isEmpty, "\(c.op): \(got.violations)")
                let same = zip(got.outputs, want.outputs).allSatisfy {
                    $0.floats.map(\.bitPattern) == $1.floats.map(\.bitPattern)
                }
                if !same { differing.append("\(c.op) (\(c.label))") }
            }
        }
        return differing
    }

    @Test("kernels=cpu equals the cpu adapter and kernels=reference the reference adapter, bitwise, on every op",
          arguments: ["cpu", "reference"])
    func kernelsBitIdentical(_ kernels: String) throws {
        let differing = try bitwiseDifferences(kernels: kernels)
        #expect(differing.isEmpty, "kernels=\(kernels) differs from the \(kernels) adapter on \(differing)")
    }

    @Test("the sim with kernels=cpu passes the conformance kit, also at a reduced speed", arguments: ["1", "0.5"])
    func conformsWithCPUKernels(_ speed: String) {
        let report = ConformanceCheck(
            candidate: "sim", options: [("kernels", "cpu"), ("speed", speed)], searchPath: TestSupport.buildSearchPath
        ).run()
        #expect(report.passed, "\(report.table())")
    }

    @Test("kernels=bogus is refused with one line naming the option and the accepted values")
    func badKernels() throws {
        let error = #expect(throws: MedleyError.self) {
            _ = try library.openDevice(0, options: [("kernels", "bogus")])
        }
        #expect(error?.code == .invalidArgument)
        let message = error?.message ?? ""
        #expect(message.hasSuffix("sim option kernels='bogus': expected reference or cpu"), "\(message)")
        #expect(!message.contains("\n"))
        let unknown = #expect(throws: MedleyError.self) { _ = try library.openDevice(0, options: [("kernel", "cpu")]) }
        let keys = "accepted keys: speed, memory, precision, kernels, vendor, name, devices, fault, costs"
        #expect(unknown?.message.contains(keys) == true, "\(unknown?.message ?? "")")
    }

    @Test("vendor and name options show in the device description")
    func vendorAndName() throws {
        let device = try library.openDevice(0, options: [("vendor", "Acme Accelerators"), ("name", "acme-x1")])
        #expect(device.description.vendor == "Acme Accelerators")
        #expect(device.description.name == "acme-x1")
    }

    @Test("memory caps allocations with an out-of-memory error object")
    func memory() throws {
        let device = try library.openDevice(0, options: [("memory", "64KiB")])
        #expect(device.description.memoryBytes == 65536)
        let held = try device.allocate(bytes: 60000)
        let error = #expect(throws: MedleyError.self) { _ = try device.allocate(bytes: 8192) }
        #expect(error?.code == .outOfMemory)
        withExtendedLifetime(held) {}
    }

    @Test("precision bf16 and fp16 round every output to that format")
    func precision() throws {
        let bf16 = try gelu(try library.openDevice(0, options: [("precision", "bf16")]), sample)
        #expect(bf16.allSatisfy { $0.bitPattern & 0xFFFF == 0 })
        let exact = try reference(sample)
        #expect(bf16 != exact)
        #expect(zip(bf16, exact).allSatisfy { abs($0 - $1) <= 0.008 * max(1, abs($1)) })

        let fp16 = try gelu(try library.openDevice(0, options: [("precision", "fp16")]), sample)
        #expect(fp16.allSatisfy { Float(Float16($0)) == $0 })
        #expect(zip(fp16, exact).allSatisfy { abs($0 - $1) <= 0.001 * max(1, abs($1)) })
    }

    @Test("the conformance kit reports bf16 tolerance failures, and passes with the bf16 tolerance")
    func bf16Check() {
        let strict = ConformanceCheck(
            candidate: "sim", options: [("precision", "bf16")], searchPath: TestSupport.buildSearchPath
        ).run()
        #expect(!strict.passed)
        // The op rows, and the finite differences on the sim's own ops (bf16 arithmetic is too coarse for them).
        #expect(strict.failures.allSatisfy { ($0.group == "op" || $0.group == "gradient") && $0.detail.contains("tolerance") })
        let relaxed = ConformanceCheck(
            candidate: "sim", options: [("precision", "bf16")], tolerance: .forDType(.bf16),
            searchPath: TestSupport.buildSearchPath
        ).run()
        #expect(relaxed.passed, "\(relaxed.table())")
    }

    @Test("the sim passes the conformance kit with precision fp32 at a reduced speed")
    func conformsAtSpeed() {
        let report = ConformanceCheck(
            candidate: "sim", options: [("speed", "0.5"), ("vendor", "Slow Co")], searchPath: TestSupport.buildSearchPath
        ).run()
        #expect(report.passed, "\(report.table())")
    }

    @Test("fault error@op: that op and every later call report DEVICE_LOST")
    func errorFault() throws {
        let device = try library.openDevice(0, options: [("fault", "error@op=2")])
        _ = try gelu(device, sample)
        let error = #expect(throws: MedleyError.self) { _ = try gelu(device, sample) }
        #expect(error?.code == .deviceLost)
        #expect(throws: MedleyError.self) { _ = try device.allocate(bytes: 16) }
    }

    @Test("fault error@step fires when the host begins that step")
    func errorAtStep() throws {
        let device = try library.openDevice(0, options: [("fault", "error@step=3")])
        try device.beginStep(1)
        _ = try gelu(device, sample)
        let error = #expect(throws: MedleyError.self) {
            try device.beginStep(3)
            _ = try gelu(device, sample)
        }
        #expect(error?.code == .deviceLost)
    }

    @Test("fault nan@op fills that op's outputs with NaN, once")
    func nanFault() throws {
        let device = try library.openDevice(0, options: [("fault", "nan@op=1")])
        #expect(try gelu(device, sample).allSatisfy(\.isNaN))
        #expect(try gelu(device, sample) == reference(sample))
    }

    @Test("fault flip@op flips a bit in exactly one output element")
    func corruptFault() throws {
        let device = try library.openDevice(0, options: [("fault", "flip@op=1")])
        let got = try gelu(device, sample)
        let exact = try reference(sample)
        #expect(zip(got, exact).filter { $0.bitPattern != $1.bitPattern }.count == 1)
    }

    @Test("fault slow is accepted and leaves results unchanged (its timing is measured by the benchmark)")
    func slowFault() throws {
        let device = try library.openDevice(0, options: [("fault", "slow:4@step=1;nan@op=99")])
        try device.beginStep(1)
        #expect(try gelu(device, sample) == reference(sample))
    }

    @Test("fault crash ends the process: the check's child, which the check reports and outlives")
    func crashFault() throws {
        let result = try TestSupport.medley(["adapter", "check", "sim", "--option", "fault=crash@op=5"], timeout: 60)
        #expect(!result.timedOut)
        #expect(result.status == 1, "\(result.output)")
        #expect(result.stdout.contains("the check process ended with status 77"))
        #expect(result.stdout.contains("injected fault crash@op=5"))
    }

    @Test("fault hang never returns (run in a child that is killed after a timeout)")
    func hangFault() throws {
        let result = try TestSupport.medley(
            ["adapter", "check", "sim", "--option", "fault=hang@op=5", "--op", "gelu_forward", "--unit-timeout", "2"],
            timeout: 60)
        #expect(!result.timedOut)
        #expect(result.stdout.contains("did not return within 2 s"), "\(result.output)")
    }

    @Test("MEDLEY_SIM_OPTIONS sets defaults, e.g. three devices of another vendor")
    func environment() throws {
        let result = try TestSupport.medley(
            ["adapters"], environment: ["MEDLEY_SIM_OPTIONS": "devices=3,vendor=Acme,memory=2GiB"])
        #expect(result.status == 0, "\(result.output)")
        let simLine = result.stdout.split(separator: "\n").first { $0.hasPrefix("sim ") } ?? ""
        #expect(simLine.contains("2: sim-1 (Acme, 2.0 GiB)"))
    }

    /// The entry count a costs file declares, or nil when it does not start like one.
    private func costsEntries(_ path: String) -> Int? {
        guard let data = FileManager.default.contents(atPath: path), data.count >= 24,
            data.prefix(8) == Data("MDSIMCST".utf8)
        else { return nil }
        let count = data.subdata(in: 12..<16).withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
        return data.count == 16 + 16 * Int(count) + 8 ? Int(count) : nil
    }

    @Test("costs=PATH keeps op costs in one file that devices read, merge into and rewrite when corrupt")
    func costsFile() throws {
        let path = try TestSupport.temporaryDirectory() + "/sim-costs"
        func compute(_ options: [(String, String)] = []) throws {
            let device = try library.openDevice(0, options: [("costs", path)] + options)
            _ = try gelu(device, sample)
            _ = try gelu(device, [Float](sample.prefix(64)))
            try device.close()
        }
        try compute()
        let first = try #require(costsEntries(path), "no costs file after the first device closed")
        #expect(first == 2)  // two shapes of one op
        try compute()
        #expect(costsEntries(path) == first, "the same signatures merge into the same entries")
        try compute([("precision", "bf16")])
        #expect(costsEntries(path) == first + 2, "another precision is another cost")
        try Data("not a cost table".utf8).write(to: URL(fileURLWithPath: path))
        try compute()
        #expect(costsEntries(path) == first, "a corrupt file is taken as empty and rewritten")
        let results = try [gelu(library.openDevice(0, options: [("costs", path)]), sample), gelu(library.openDevice(0), sample)]
        #expect(results[0] == results[1], "the costs file changes timing, never results")

        let error = #expect(throws: MedleyError.self) {
            _ = try library.openDevice(0, options: [("costs", "/nonexistent-medley-dir/costs")])
        }
        #expect(error?.code == .invalidArgument)
        #expect(error?.message.contains("sim option costs='/nonexistent-medley-dir/costs'") == true, "\(error?.message ?? "")")
        #expect(error?.message.contains("\n") == false)
    }

    @Test("a speed whose sleep cannot be honoured is refused at open, naming the option, the value and the range",
          arguments: ["1e-300", "4.9e-324", "1e-7", "inf", "nan", "0"])
    func unhonourableSpeed(_ value: String) throws {
        let error = #expect(throws: MedleyError.self, "speed=\(value)") {
            _ = try library.openDevice(0, options: [("speed", value)])
        }
        let message = error?.message ?? ""
        #expect(error?.code == .invalidArgument, "\(message)")
        #expect(message.contains("speed='\(value)'"), "\(message)")
        #expect(message.contains("[1e-06, 1]"), "\(message)")
        #expect(!message.contains("\n"), "\(message)")
    }

    @Test("the least honourable speed opens, and slow faults may not take the speed below it")
    func leastSpeed() throws {
        _ = try library.openDevice(0, options: [("speed", "1e-06")])
        _ = try library.openDevice(0, options: [("speed", "0.5"), ("fault", "slow:4@step=1;slow:1000@step=2")])
        let error = #expect(throws: MedleyError.self) {
            _ = try library.openDevice(0, options: [("speed", "0.5"), ("fault", "slow:1e300@step=1")])
        }
        let message = error?.message ?? ""
        #expect(error?.code == .invalidArgument, "\(message)")
        #expect(message.contains("fault='slow:1e300@step=1'"), "\(message)")
        #expect(message.contains("1e-06"), "\(message)")
        #expect(!message.contains("\n"), "\(message)")
    }

    @Test("unknown and malformed options are rejected with one line naming the option")
    func badOptions() throws {
        let cases: [(String, String, String)] = [
            ("speed", "-1", "speed"), ("speed", "0", "speed"), ("speed", "2", "speed"),
            ("memory", "lots", "memory"), ("precision", "fp8", "precision"), ("devices", "0", "devices"),
            ("fault", "explode@op=1", "fault"), ("fault", "crash@op=x", "fault"), ("fault", "slow:0.5@step=1", "fault"),
            ("kernels", "bogus", "kernels"), ("kernels", "", "kernels"), ("colour", "blue", "colour"),
        ]
        for (key, value, named) in cases {
            let error = #expect(throws: MedleyError.self, "\(key)=\(value)") {
                _ = try library.openDevice(0, options: [(key, value)])
            }
            #expect(error?.code == .invalidArgument, "\(key)=\(value)")
            #expect(error?.message.contains(named) == true, "\(key)=\(value): \(error?.message ?? "")")
            #expect(error?.message.contains("\n") == false)
        }
    }
}
