import MedleyCore

/// The conformance kit behind `medley adapter check`.
///
/// It loads a candidate adapter and the reference adapter, then checks, in order:
/// the table (ABI, entries), the device (count, description), memory (round
/// trips at odd offsets, memset, device-to-device copy), every op of the opset
/// against the reference on random inputs with odd sizes and non-zero offsets
/// (guard bytes catch out-of-bounds writes and modified inputs), the
/// reference's backward ops against finite differences, and that bad
/// arguments come back as error objects with the right code.
public struct ConformanceCheck {
    /// Adapter to check: a name or a library path.
    public var candidate: String
    /// Options to open the candidate's device with.
    public var options: [(String, String)]
    /// Tolerance for comparing with the reference.
    public var tolerance: Tolerance
    /// Where names are looked up.
    public var searchPath: AdapterSearchPath
    /// Seed of the random inputs.
    public var seed: UInt64

    /// Creates a check of `candidate`.
    public init(
        candidate: String, options: [(String, String)] = [], tolerance: Tolerance = .forDType(.f32),
        searchPath: AdapterSearchPath = .default, seed: UInt64 = 20_261_123, ops: [String]? = nil
    ) {
        self.ops = ops
        self.candidate = candidate
        self.options = options
        self.tolerance = tolerance
        self.searchPath = searchPath
        self.seed = seed
    }

    /// Ops to check (nil: every op of the opset). The other groups always run.
    public var ops: [String]?

    /// One piece of the check, run in order; a crash inside one is reported against it.
    public enum Unit: Sendable, Equatable, CustomStringConvertible {
        /// Loading the adapter and the reference, opening the device (table and device rows).
        case setup
        case memory
        case op(String)
        case gradients
        /// The same finite-difference probes on the candidate's own backward ops.
        case candidateGradients
        case errors

        public var description: String {
            switch self {
            case .setup: "loading the adapter and opening its device"
            case .memory: "the memory checks"
            case .op(let name): "op \(name)"
            case .gradients: "the gradient checks"
            case .candidateGradients: "the gradient checks on the adapter"
            case .errors: "the error-path checks"
            }
        }

        /// The report row a crash or a hang inside this unit becomes.
        public var row: (group: String, item: String) {
            switch self {
            case .setup: ("device", "open")
            case .memory: ("memory", "round trip")
            case .op(let name): ("op", name)
            case .gradients: ("gradient", "reference")
            case .candidateGradients: ("gradient", "adapter")
            case .errors: ("error", "setup")
            }
        }
    }

    /// Every unit of this check, in the order `run` goes through them.
    public var units: [Unit] {
        [.setup, .memory] + (ops ?? AdapterABI.opset.map(\.name)).map { Unit.op($0) } + [.gradients, .candidateGradients, .errors]
    }

    /// Runs every check and returns the report. Never throws: a problem is a failed row.
    public func run() -> ConformanceReport { run(from: 0) }

    /// Runs the units from `start` on (the setup always runs; its rows are kept only when
    /// `start` is 0). `onUnit` hears each unit's index as it begins and `onRows` the rows of
    /// each unit as it ends, so a caller can show them as they come and tell which unit a
    /// crash interrupted.
    public func run(
        from start: Int, onUnit: (Int) -> Void = { _ in }, onRows: ([ConformanceReport.Row]) -> Void = { _ in },
        onLoaded: (_ adapter: String, _ path: String) -> Void = { _, _ in }
    ) -> ConformanceReport {
        var report = ConformanceReport(
            adapter: candidate, path: "", options: Dictionary(options, uniquingKeysWith: { $1 }),
            tolerance: tolerance, rows: [])
        let units = self.units
        onUnit(0)
        let opened = setUp(&report)
        if !report.path.isEmpty { onLoaded(report.adapter, report.path) }
        guard let (device, referenceDevice) = opened else {
            onRows(report.rows)
            return report
        }
        if start == 0 {
            onRows(report.rows)
        } else {
            report.rows = []
        }
        for index in max(1, start)..<units.count {
            onUnit(index)
            let before = report.rows.count
            switch units[index] {
            case .setup: break
            case .memory: checkMemory(device, &report)
            case .op(let name): checkOp(name, device, reference: referenceDevice, &report)
            case .gradients: checkGradients(referenceDevice, label: "reference", &report)
            case .candidateGradients:
                // The candidate's backward ops against finite differences of its own forward ops, at
                // f32 (a reduced-precision profile compares with the reference instead; the op rows do).
                if report.adapter != "reference" {
                    if tolerance == .forDType(.f32) {
                        checkGradients(device, label: report.adapter, &report)
                    } else {
                        report.add(
                            "gradient", report.adapter, .skip,
                            "finite differences need f32 arithmetic; the op rows compare the backward ops with the reference")
                    }
                }
            case .errors: checkErrors(device, &report)
            }
            onRows(Array(report.rows[before...]))
        }
        return report
    }

    /// Loads the candidate and the reference and opens both devices.
    private func setUp(_ report: inout ConformanceReport) -> (Device, Device)? {
        // Table.
        let library: AdapterLibrary
        do {
            library = try AdapterLibrary.load(candidate, searchPath: searchPath)
        } catch {
            report.add("table", "load", .fail, "\(error)")
            return nil
        }
        report.adapter = library.info.name
        report.path = library.path
        report.add(
            "table", "abi", .pass,
            "ABI \(library.abiMajor).\(library.abiMinor), opset \(library.opsetVersion), struct_size \(library.tableSize)")
        report.add("table", "required entries", .pass, "all \(AdapterABI.entries.filter(\.isRequired).count) present")
        report.add(
            "table", "optional entries", .pass,
            library.optionalEntriesAbsent.isEmpty
                ? "all present" : "absent (host copes): \(library.optionalEntriesAbsent.joined(separator: ", "))")
        if library.info.name.isEmpty {
            report.add("table", "plugin info", .fail, "plugin_info gave an empty name")
        }

        // Device.
        let device: Device
        do {
            let count = try library.deviceCount()
            guard count >= 1 else {
                report.add("device", "count", .fail, "device_count is 0: nothing to check")
                return nil
            }
            report.add("device", "count", .pass, "\(count)")
            device = try library.openDevice(0, options: options)
            let d = device.description
            var problems: [String] = []
            if d.name.isEmpty { problems.append("empty name") }
            if d.memoryBytes == 0 { problems.append("memory_bytes is 0") }
            if !d.dtypes.contains(.f32) { problems.append("f32 missing from dtype_mask") }
            report.add(
                "device", "describe", problems.isEmpty ? .pass : .fail,
                problems.isEmpty
                    ? "\(d.name) (\(d.vendor)), \(d.memoryBytes) bytes, dtypes \(d.dtypes.map(\.description).joined(separator: ","))"
                    : problems.joined(separator: "; "))
        } catch {
            report.add("device", "open", .fail, "\(error)")
            return nil
        }

        // Reference.
        do {
            let reference = try AdapterLibrary.load("reference", searchPath: searchPath)
            return (device, try reference.openDevice(0))
        } catch {
            report.add("ops", "reference", .fail, "the reference adapter is needed as the oracle: \(error)")
            return nil
        }
    }

    // MARK: Memory

    private func checkMemory(_ device: Device, _ report: inout ConformanceReport) {
        do {
            var rng = SeededGenerator(seed: seed)
            let values = rng.floats(1001)
            let buffer = try device.allocate(bytes: 4 * 1001 + 12)
            try buffer.write(values, at: 12)
            let back: [Float] = try buffer.read(count: 1001, at: 12)
            report.add("memory", "h2d/d2h", back == values ? .pass : .fail, back == values ? "" : "round trip changed data")

            try buffer.fill(byte: 0x3F, offset: 20, bytes: 9)
            let bytes: [UInt8] = try buffer.read(count: 40, at: 0)
            let original: [UInt8] = values.withUnsafeBytes { Array($0.prefix(28)) }
            var expected = original
            for i in 8..<17 { expected[i] = 0x3F }  // bytes 20..<29 of the buffer
            let ok = Array(bytes[12..<40]) == expected
            report.add("memory", "memset", ok ? .pass : .fail, ok ? "" : "memset wrote the wrong bytes")

            if device.library.provides("copy_d2d") {
                let other = try device.allocate(bytes: 4 * 1001)
                try other.copy(from: buffer, sourceOffset: 12, offset: 0, bytes: 4 * 1001)
                let copied: [Float] = try other.read(count: 1001)
                let expected: [Float] = try buffer.read(count: 1001, at: 12)
                report.add("memory", "d2d", copied == expected ? .pass : .fail, copied == expected ? "" : "copy differs")
            } else {
                report.add("memory", "d2d", .skip, "copy_d2d absent: the host bounces through host memory")
            }
        } catch {
            report.add("memory", "round trip", .fail, "\(error)")
        }
    }

    // MARK: Ops

    /// Checks one op on every case the builder makes for it; a failure names the case, the
    /// worst element by its index in the tensor's shape, and the likely causes it matches.
    private func checkOp(_ name: String, _ device: Device, reference: Device, _ report: inout ConformanceReport) {
        let referenceRunner = OpRunner(device: reference)
        let candidateRunner = OpRunner(device: device)
        // Seeded per op, so that a check resumed at any op builds the same cases.
        let opSeed = seed ^ Self.nameSeed(name)
        var offsets = SeededGenerator(seed: opSeed ^ 0x5eed)
        var builder = OpCaseBuilder(rng: SeededGenerator(seed: opSeed)) { op, ins, outs, attrs in
            var local = SeededGenerator(seed: 1)
            return try referenceRunner.run(op, inputs: ins, outputs: outs, attributes: attrs, offsets: &local).outputs
        }
        do {
            guard try device.supports(name, dtype: .f32) else {
                report.add("op", name, .fail, "op_query says f32 is unsupported; opset v1 requires it")
                return
            }
            let optional = try [DType.bf16, .f16].filter { try device.supports(name, dtype: $0) }
            var worst: (ratio: Double, text: String) = (-1, "")
            var failure: (text: String, causes: [String])?
            var outcomes: [(OpCase, passed: Bool, ratio: Double)] = []
            for c in try builder.cases(for: name) {
                let expected = try referenceRunner.run(
                    c.op, inputs: c.inputs, outputs: c.outputs, attributes: c.attributes, offsets: &offsets)
                let got = try candidateRunner.run(
                    c.op, inputs: c.inputs, outputs: c.outputs, attributes: c.attributes, offsets: &offsets,
                    inputNames: c.inputNames, outputNames: c.outputNames)
                if !got.violations.isEmpty {
                    // Writes outside the tensors come first: the numbers may be right by luck.
                    report.add("op", name, .fail, "\(c.label): " + got.violations.joined(separator: "; "))
                    return
                }
                var casePassed = true
                var caseRatio = 0.0
                for (index, outputName) in c.outputNames.enumerated() {
                    let d = compare(got.outputs[index].floats, expected.outputs[index].floats, tolerance: tolerance)
                    caseRatio = max(caseRatio, d.ratio)
                    let shape = c.outputs[index].shape
                    if d.ratio > worst.ratio { worst = (d.ratio, "\(c.label): worst \(d.describe(outputName, shape: shape))") }
                    if !d.passed {
                        casePassed = false
                        if failure == nil {
                            var causes = Diagnosis.output(
                                c, index: index, got: got.outputs[index], expected: expected.outputs[index],
                                tolerance: tolerance)
                            causes += try ignoredAttributes(
                                c, got: got.outputs, expected: expected.outputs, candidate: candidateRunner,
                                reference: referenceRunner, offsets: &offsets)
                            failure = ("\(c.label): \(d.describe(outputName, shape: shape))", causes)
                        }
                    }
                }
                outcomes.append((c, casePassed, caseRatio))
            }
            let extras = optional.isEmpty ? "" : " [also \(optional.map(\.description).joined(separator: ","))]"
            if let failure {
                let failed = outcomes.filter { !$0.passed }.count
                let causes = failure.causes + Diagnosis.acrossCases(outcomes)
                var text = failure.text
                if outcomes.count > 1 { text += " [\(failed) of \(outcomes.count) cases fail]" }
                if !causes.isEmpty { text += "; likely: " + causes.joined(separator: "; ") }
                report.add("op", name, .fail, text)
            } else {
                report.add("op", name, .pass, worst.text + " [\(outcomes.count) cases]" + extras)
            }
        } catch {
            report.add("op", name, .fail, "\(error)")
        }
    }

    /// A stable 64-bit FNV-1a of an op's name, to seed its cases.
    private static func nameSeed(_ name: String) -> UInt64 {
        name.utf8.reduce(0xcbf2_9ce4_8422_2325 as UInt64) { ($0 ^ UInt64($1)) &* 0x0000_0100_0000_01b3 }
    }

    /// The attributes of a failed case that the candidate ignores: its output does not change
    /// when the attribute does, while the reference's output does.
    private func ignoredAttributes(
        _ c: OpCase, got: [HostTensor], expected: [HostTensor], candidate: OpRunner, reference: OpRunner,
        offsets: inout SeededGenerator
    ) throws -> [String] {
        var ignored: [String] = []
        for (name, value) in c.attributes.sorted(by: { $0.key < $1.key }) {
            guard let other = Diagnosis.perturbed(name, value) else { continue }
            var attributes = c.attributes
            attributes[name] = other
            let mine = try candidate.run(c.op, inputs: c.inputs, outputs: c.outputs, attributes: attributes, offsets: &offsets)
            let theirs = try reference.run(c.op, inputs: c.inputs, outputs: c.outputs, attributes: attributes, offsets: &offsets)
            // The reference must move by more than the tolerance, the candidate by (almost) nothing.
            let unchanged = zip(mine.outputs, got).allSatisfy { a, b in
                compare(a.floats, b.floats, tolerance: tolerance).ratio <= 0.05
            }
            let referenceMoved = zip(theirs.outputs, expected).contains { a, b in
                !compare(a.floats, b.floats, tolerance: tolerance).passed
            }
            if unchanged && referenceMoved {
                ignored.append("ignores the '\(name)' attribute (its output stays the same when \(name) goes from \(fmt(value)) to \(fmt(other)))")
            }
        }
        return ignored
    }

    // MARK: Gradients

    /// Each backward op's analytic gradient on `device` against central finite differences of
    /// its forward op on the same device; rows are named "<label> <backward op>".
    private func checkGradients(_ device: Device, label: String, _ report: inout ConformanceReport) {
        var rng = SeededGenerator(seed: seed ^ 0x6ead)
        let runner = OpRunner(device: device)
        for probe in GradientProbe.all(rng: &rng) {
            do {
                let outcome = try probe.run(on: runner, rng: &rng)
                report.add(
                    "gradient", "\(label) \(probe.backward)", outcome.worstRatio <= 1 ? .pass : .fail,
                    "worst \(outcome.detail)")
            } catch {
                report.add("gradient", "\(label) \(probe.backward)", .fail, "\(error)")
            }
        }
    }

    // MARK: Error paths

    private func checkErrors(_ device: Device, _ report: inout ConformanceReport) {
        func expect(_ item: String, _ status: AdapterStatus, _ body: () throws -> Void) {
            do {
                try body()
                report.add("error", item, .fail, "returned success; expected an error object with \(status)")
            } catch let error as MedleyError {
                if let got = error.adapterStatus {
                    report.add(
                        "error", item, got == status ? .pass : .fail,
                        got == status ? error.message : "returned \(got), expected \(status): \(error.message)")
                } else {
                    report.add("error", item, .fail, "\(error)")
                }
            } catch {
                report.add("error", item, .fail, "\(error)")
            }
        }
        do {
            let x = try device.allocate(bytes: 4 * 6 * 4)
            let w = try device.allocate(bytes: 4 * 4 * 4)
            let out = try device.allocate(bytes: 4 * 6 * 4)
            let tokens = try device.upload([Int32](repeating: 0, count: 6))
            try x.fill(byte: 0)
            try w.fill(byte: 0)

            expect("unknown op", .unsupported) {
                try device.launch(
                    "medley_no_such_op", inputs: [x.tensor(.f32, [6, 4])], outputs: [out.tensor(.f32, [6, 4])])
            }
            do {
                let supported = try device.supports("medley_no_such_op")
                report.add(
                    "error", "op_query unknown op", supported ? .fail : .pass,
                    supported ? "op_query claims support for an unknown op" : "reported unsupported")
            } catch {
                report.add("error", "op_query unknown op", .fail, "op_query failed instead of answering 0: \(error)")
            }
            expect("null buffer", .invalidArgument) {
                try device.launch(
                    "matmul_forward", inputs: [TensorView(buffer: nil, dtype: .f32, shape: [6, 4]), w.tensor(.f32, [4, 4])],
                    outputs: [out.tensor(.f32, [6, 4])])
            }
            expect("wrong shape", .invalidArgument) {
                try device.launch(
                    "matmul_forward", inputs: [x.tensor(.f32, [6, 4]), w.tensor(.f32, [4, 3])],
                    outputs: [out.tensor(.f32, [6, 4])])
            }
            expect("wrong input count", .invalidArgument) {
                try device.launch("gelu_forward", inputs: [], outputs: [out.tensor(.f32, [6, 4])])
            }
            expect("view past buffer end", .invalidArgument) {
                try device.launch(
                    "gelu_forward", inputs: [x.tensor(.f32, [6, 4], offset: 8)], outputs: [out.tensor(.f32, [6, 4])])
            }
            expect("wrong dtype", .invalidArgument) {
                try device.launch(
                    "gelu_forward", inputs: [tokens.tensor(.i32, [6])], outputs: [out.tensor(.f32, [6])])
            }
            expect("missing attribute", .invalidArgument) {
                try device.launch(
                    "scale", inputs: [x.tensor(.f32, [6, 4])], outputs: [out.tensor(.f32, [6, 4])], attributes: [:])
            }
            expect("token out of range", .invalidArgument) {
                let bad = try device.upload([Int32](repeating: 9, count: 6))
                try device.launch(
                    "encoder_forward",
                    inputs: [bad.tensor(.i32, [1, 6]), w.tensor(.f32, [4, 4]), x.tensor(.f32, [6, 4])],
                    outputs: [out.tensor(.f32, [1, 6, 4])])
            }
            expect("oversize alloc", .outOfMemory) {
                _ = try device.allocate(bytes: Int(min(device.description.memoryBytes, UInt64(Int.max / 2))) + 1)
            }
            expect("zero-byte alloc", .invalidArgument) {
                _ = try device.allocate(bytes: 0)
            }
            expect("copy past buffer end", .invalidArgument) {
                try x.write([Float](repeating: 1, count: 30))
            }
            expect("unknown device option", .invalidArgument) {
                _ = try device.library.openDevice(0, options: [("medley-check-no-such-option", "1")])
            }
            expect("device index out of range", .invalidArgument) {
                _ = try device.library.openDevice(try device.library.deviceCount())
            }
        } catch {
            report.add("error", "setup", .fail, "\(error)")
        }
    }
}
