import MedleyCore

/// Runs one op on a device from host tensors, with every tensor placed at an
/// odd, non-zero offset inside its own buffer and guarded by a known byte
/// pattern before and after, so out-of-bounds writes and writes to inputs are
/// caught, not just wrong numbers.
struct OpRunner {
    static let guardByte: UInt8 = 0xA5
    static let trailingGuard = 64

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

    private func guardsIntact(_ view: TensorView) throws -> Bool {
        guard let buffer = view.buffer else { return true }
        let bytes: [UInt8] = try buffer.read(count: buffer.byteCount)
        let before = bytes[0..<view.offset]
        let after = bytes[(view.offset + view.byteCount)...]
        return before.allSatisfy { $0 == Self.guardByte } && after.allSatisfy { $0 == Self.guardByte }
    }

    /// Launches `op` and reads back every output.
    func run(
        _ op: String, inputs: [HostTensor], outputs: [HostTensor], attributes: [String: Double],
        offsets: inout SeededGenerator
    ) throws -> Result {
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
            if try !guardsIntact(view) { result.violations.append("wrote outside output \(index)") }
        }
        for (index, view) in inViews.enumerated() {
            if try !guardsIntact(view) { result.violations.append("wrote outside input \(index)") }
            if try readBack(view, like: inputs[index]) != inputs[index] {
                result.violations.append("modified input \(index)")
            }
        }
        withExtendedLifetime(keep) {}
        return result
    }
}
