import MedleyCore

/// Runs one op on a device from host tensors, with every tensor placed at an
/// odd, non-zero offset inside its own buffer and guarded by a known byte
/// pattern before and after, so out-of-bounds writes and writes to inputs are
/// caught, not just wrong numbers. The trailing guard is a page, so an overrun of
/// a padded tile lands in it (and is measured) rather than in someone else's memory.
struct OpRunner {
    static let guardByte: UInt8 = 0xA5
    static let trailingGuard = 4096

    let device: Device

    /// What came out of a launch.
    struct Result {
        var outputs: [HostTensor]
        /// Problems other than numbers: guard bytes or inputs that were overwritten.
        var violations: [String]
    }

    /// Places `tensor` at a non-zero offset (a multiple of its element size) with guards.
    private func place(_ tensor: HostTensor, leadElements: Int) throws -> (DeviceBuffer, TensorView) {
        let lead = leadElements * tensor.dtype.size
        let total = lead + tensor.byteCount + Self.trailingGuard
        let buffer = try device.allocate(bytes: total)
        try buffer.write([UInt8](repeating: Self.guardByte, count: total))
        switch tensor.dtype {
        case .i32: try buffer.write(tensor.ints, at: lead)
        default: try buffer.write(tensor.floats, at: lead)
        }
        return (buffer, buffer.tensor(tensor.dtype, tensor.shape, offset: lead))
    }

    private func readBack(_ view: TensorView, like tensor: HostTensor) throws -> HostTensor {
        guard let buffer = view.buffer else { return tensor }
        switch tensor.dtype {
        case .i32: return HostTensor(tensor.shape, ints: try buffer.read(count: tensor.count, at: view.offset))
        default: return HostTensor(tensor.shape, floats: try buffer.read(count: tensor.count, at: view.offset))
        }
    }

    /// How far writes strayed outside `view`: bytes before its start and past its end
    /// (counted to the farthest changed guard byte), nil when both guards are intact.
    private func strays(_ view: TensorView) throws -> (before: Int, after: Int)? {
        guard let buffer = view.buffer else { return nil }
        let bytes: [UInt8] = try buffer.read(count: buffer.byteCount)
        let end = view.offset + view.byteCount
        let before = bytes[0..<view.offset].firstIndex { $0 != Self.guardByte }.map { view.offset - $0 } ?? 0
        let after = bytes[end...].lastIndex { $0 != Self.guardByte }.map { $0 - end + 1 } ?? 0
        return before == 0 && after == 0 ? nil : (before, after)
    }

    private static func strayText(_ stray: (before: Int, after: Int), _ what: String, _ op: String) -> String {
        var parts: [String] = []
        if stray.after > 0 {
            parts.append(
                "wrote \(stray.after) bytes past \(what) of \(op)"
                    + (stray.after >= trailingGuard ? " (or more: the whole \(trailingGuard)-byte guard was changed)" : ""))
        }
        if stray.before > 0 { parts.append("wrote \(stray.before) bytes before the start of \(what) of \(op)") }
        return parts.joined(separator: "; ")
    }

    /// Launches `op` and reads back every output.
    func run(
        _ op: String, inputs: [HostTensor], outputs: [HostTensor], attributes: [String: Double],
        offsets: inout SeededGenerator, inputNames: [String] = [], outputNames: [String] = []
    ) throws -> Result {
        func name(_ names: [String], _ kind: String, _ index: Int) -> String {
            index < names.count ? "\(kind) \(index) (\(names[index]))" : "\(kind) \(index)"
        }
        var keep: [DeviceBuffer] = []
        var inViews: [TensorView] = []
        var outViews: [TensorView] = []
        for tensor in inputs {
            let (buffer, view) = try place(tensor, leadElements: 1 + 2 * offsets.below(4))
            keep.append(buffer)
            inViews.append(view)
        }
        for tensor in outputs {
            let (buffer, view) = try place(tensor, leadElements: 1 + 2 * offsets.below(4))
            keep.append(buffer)
            outViews.append(view)
        }
        try device.launch(op, inputs: inViews, outputs: outViews, attributes: attributes)
        try device.synchronize()
        var result = Result(outputs: [], violations: [])
        for (index, view) in outViews.enumerated() {
            result.outputs.append(try readBack(view, like: outputs[index]))
            if let stray = try strays(view) {
                result.violations.append(Self.strayText(stray, name(outputNames, "output", index), op))
            }
        }
        for (index, view) in inViews.enumerated() {
            if let stray = try strays(view) {
                result.violations.append(Self.strayText(stray, name(inputNames, "input", index), op))
            }
            let back = try readBack(view, like: inputs[index])
            if back != inputs[index] {
                let changed = inputs[index].dtype == .i32
                    ? back.ints.indices.first { back.ints[$0] != inputs[index].ints[$0] }
                    : back.floats.indices.first { back.floats[$0].bitPattern != inputs[index].floats[$0].bitPattern }
                let at = changed.map { " (first at \(indexText($0, inputs[index].shape)))" } ?? ""
                result.violations.append(
                    "modified \(name(inputNames, "input", index))\(at): inputs are read-only")
            }
        }
        withExtendedLifetime(keep) {}
        return result
    }
}
