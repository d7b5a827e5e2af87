import CMedleyAdapter
import MedleyCore

/// An opened device of an adapter.
///
/// A device is driven from one thread at a time (the ABI's rule); it is not
/// `Sendable`. Buffers allocated on it are released when they are deinitialised
/// or when the device is closed, whichever comes first.
public final class Device {
    /// The library the device belongs to.
    public let library: AdapterLibrary
    /// Index the device was opened with.
    public let index: Int
    /// What the device says it is.
    public let description: DeviceDescription

    let handle: OpaquePointer
    private(set) var isOpen = true
    /// Bytes of the buffers allocated on this device and not yet released (what Medley holds on
    /// it, not the adapter's own use).
    public internal(set) var bytesInUse: UInt64 = 0

    /// What a device is.
    public struct DeviceDescription: Sendable, Hashable {
        /// Model name of the part.
        public var name: String
        /// Vendor of the part.
        public var vendor: String
        /// Memory the host may allocate, in bytes.
        public var memoryBytes: UInt64
        /// Dtypes the device supports.
        public var dtypes: [DType]
        /// Cores, SMs, …; informational.
        public var computeUnits: Int
    }

    init(library: AdapterLibrary, index: Int, options: [(String, String)]) throws {
        guard let index32 = Int32(exactly: index) else {
            throw MedleyError(.invalidArgument, "device index \(index) is out of range")
        }
        self.library = library
        self.index = index
        let api = library.api.pointee
        var handle: OpaquePointer?
        try withOptions(options) { pointer, count in
            try library.check(api.device_open!(index32, pointer, count, &handle), "device_open(\(index))")
        }
        guard let handle else {
            throw MedleyError(.conformance, "adapter \(library.info.name): device_open returned no device")
        }
        self.handle = handle
        var raw = medley_device_desc()
        raw.struct_size = MemoryLayout<medley_device_desc>.size
        do {
            try library.check(api.device_describe!(handle, &raw), "device_describe")
        } catch {
            _ = api.device_close!(handle).map { api.error_free!($0) }
            throw error
        }
        self.description = DeviceDescription(
            name: raw.name.map { String(cString: $0) } ?? "",
            vendor: raw.vendor.map { String(cString: $0) } ?? "",
            memoryBytes: raw.memory_bytes,
            dtypes: DType.set(fromMask: raw.dtype_mask),
            computeUnits: Int(raw.compute_units))
    }

    deinit {
        if isOpen { try? close() }
    }

    /// Closes the device; its buffers become invalid.
    public func close() throws {
        guard isOpen else { return }
        isOpen = false
        try library.check(library.api.pointee.device_close!(handle), "device_close")
    }

    // MARK: Memory

    /// Allocates `bytes` of device memory.
    public func allocate(bytes: Int) throws -> DeviceBuffer {
        try requireOpen()
        guard bytes >= 0 else { throw MedleyError(.invalidArgument, "cannot allocate \(bytes) bytes") }
        var buffer: OpaquePointer?
        try library.check(
            library.api.pointee.buffer_alloc!(handle, UInt64(bytes), &buffer), "buffer_alloc(\(bytes) bytes)")
        guard let buffer else {
            throw MedleyError(.conformance, "adapter \(library.info.name): buffer_alloc returned no buffer")
        }
        bytesInUse += UInt64(bytes)
        return DeviceBuffer(device: self, handle: buffer, byteCount: bytes)
    }

    /// Allocates a buffer and copies `values` into it.
    public func upload<T: BitwiseCopyable>(_ values: [T]) throws -> DeviceBuffer {
        let buffer = try allocate(bytes: max(1, values.count * MemoryLayout<T>.stride))
        try buffer.write(values)
        return buffer
    }

    /// Waits until all work queued on the default stream has finished.
    public func synchronize() throws {
        try requireOpen()
        try library.check(library.api.pointee.stream_synchronize!(handle, nil), "stream_synchronize")
    }

    /// Tells the device that training step `step` begins (a no-op when the adapter lacks `step_begin`).
    public func beginStep(_ step: Int) throws {
        try requireOpen()
        guard library.provides("step_begin") else { return }
        try library.check(library.api.pointee.step_begin!(handle, Int64(step)), "step_begin(\(step))")
    }

    // MARK: Ops

    /// Whether the device runs `op` with float tensors of `dtype`.
    public func supports(_ op: String, dtype: DType = .f32) throws -> Bool {
        try requireOpen()
        var supported: Int32 = 0
        try op.withCString { name in
            try library.check(library.api.pointee.op_query!(handle, name, dtype.rawValue, &supported), "op_query(\(op))")
        }
        return supported != 0
    }

    /// Runs op `op` of the opset on the default stream.
    public func launch(
        _ op: String, inputs: [TensorView], outputs: [TensorView], attributes: [String: Double] = [:]
    ) throws {
        try requireOpen()
        let rawInputs = inputs.map(\.raw)
        let rawOutputs = outputs.map(\.raw)
        let names = attributes.keys.sorted()
        try withCStrings(names) { namePointers in
            let attrs = zip(namePointers, names).map { medley_attr(name: $0, value: attributes[$1]!) }
            try rawInputs.withUnsafeBufferPointer { ins in
                try rawOutputs.withUnsafeBufferPointer { outs in
                    try attrs.withUnsafeBufferPointer { attrs in
                        try op.withCString { name in
                            try library.check(
                                library.api.pointee.op_launch!(
                                    handle, nil, name, ins.baseAddress, ins.count, outs.baseAddress, outs.count,
                                    attrs.baseAddress, attrs.count),
                                "op_launch")
                        }
                    }
                }
            }
        }
    }

    func requireOpen() throws {
        guard isOpen else {
            throw MedleyError(.invalidArgument, "device \(index) of adapter \(library.info.name) is closed")
        }
    }
}

/// Calls `body` with C strings for `strings`, valid for the duration of the call.
func withCStrings<R>(_ strings: [String], _ body: ([UnsafePointer<CChar>]) throws -> R) throws -> R {
    var copies: [UnsafeMutablePointer<CChar>] = []
    defer { copies.forEach { $0.deallocate() } }
    for string in strings {
        let utf8 = Array(string.utf8CString)
        let copy = UnsafeMutablePointer<CChar>.allocate(capacity: utf8.count)
        copy.initialize(from: utf8, count: utf8.count)
        copies.append(copy)
    }
    return try body(copies.map { UnsafePointer($0) })
}

/// Calls `body` with a C array of options, valid for the duration of the call.
func withOptions<R>(_ options: [(String, String)], _ body: (UnsafePointer<medley_option>?, Int) throws -> R) throws -> R {
    try withCStrings(options.map(\.0)) { keys in
        try withCStrings(options.map(\.1)) { values in
            let raw = zip(keys, values).map { medley_option(key: $0, value: $1) }
            return try raw.withUnsafeBufferPointer { try body($0.baseAddress, $0.count) }
        }
    }
}
