import CMedleyAdapter
import MedleyCore

/// Device memory of a fixed size, freed when the last reference goes away.
public final class DeviceBuffer {
    /// The device that owns the memory.
    public let device: Device
    /// Size in bytes.
    public let byteCount: Int

    let handle: OpaquePointer

    init(device: Device, handle: OpaquePointer, byteCount: Int) {
        self.device = device
        self.handle = handle
        self.byteCount = byteCount
    }

    deinit {
        device.bytesInUse -= min(device.bytesInUse, UInt64(byteCount))
        if device.isOpen, let error = device.library.api.pointee.buffer_free!(device.handle, handle) {
            device.library.api.pointee.error_free!(error)
        }
    }

    /// Copies `values` into the buffer at byte `offset`.
    public func write<T: BitwiseCopyable>(_ values: [T], at offset: Int = 0) throws {
        try device.requireOpen()
        let bytes = values.count * MemoryLayout<T>.stride
        try values.withUnsafeBytes { raw in
            try device.library.check(
                device.library.api.pointee.copy_h2d!(
                    device.handle, nil, handle, UInt64(offset), raw.baseAddress, UInt64(bytes)),
                "copy_h2d(\(bytes) bytes at \(offset))")
        }
    }

    /// Copies `count` elements starting at byte `offset` back to the host.
    public func read<T: BitwiseCopyable>(_ type: T.Type = T.self, count: Int, at offset: Int = 0) throws -> [T] {
        try device.requireOpen()
        let bytes = count * MemoryLayout<T>.stride
        var result = [T]()
        result.reserveCapacity(count)
        try withUnsafeTemporaryAllocation(of: T.self, capacity: max(count, 1)) { temp in
            try device.library.check(
                device.library.api.pointee.copy_d2h!(
                    device.handle, nil, temp.baseAddress, handle, UInt64(offset), UInt64(bytes)),
                "copy_d2h(\(bytes) bytes at \(offset))")
            try device.synchronize()
            result.append(contentsOf: temp.prefix(count))
        }
        return result
    }

    /// Copies `source`'s bytes into the buffer at byte `offset` (no intermediate array).
    public func write(from source: UnsafeRawBufferPointer, at offset: Int = 0) throws {
        try device.requireOpen()
        guard source.count > 0 else { return }
        try device.library.check(
            device.library.api.pointee.copy_h2d!(
                device.handle, nil, handle, UInt64(offset), source.baseAddress, UInt64(source.count)),
            "copy_h2d(\(source.count) bytes at \(offset))")
    }

    /// Copies `destination.count` bytes starting at byte `offset` into `destination`, and waits for them.
    public func read(into destination: UnsafeMutableRawBufferPointer, at offset: Int = 0) throws {
        try device.requireOpen()
        guard destination.count > 0 else { return }
        try device.library.check(
            device.library.api.pointee.copy_d2h!(
                device.handle, nil, destination.baseAddress, handle, UInt64(offset), UInt64(destination.count)),
            "copy_d2h(\(destination.count) bytes at \(offset))")
        try device.synchronize()
    }

    /// Queues a copy of `destination.count` bytes starting at byte `offset` into `destination`
    /// without waiting: the bytes are there once the device's stream is synchronized, and
    /// `destination` must stay valid until then. Several queued reads then one
    /// `Device.synchronize()` let a device with its own memory chain its transfers.
    public func enqueueRead(into destination: UnsafeMutableRawBufferPointer, at offset: Int = 0) throws {
        try device.requireOpen()
        guard destination.count > 0 else { return }
        try device.library.check(
            device.library.api.pointee.copy_d2h!(
                device.handle, nil, destination.baseAddress, handle, UInt64(offset), UInt64(destination.count)),
            "copy_d2h(\(destination.count) bytes at \(offset))")
    }

    /// Sets `bytes` bytes at `offset` to `value` (all of the buffer by default).
    public func fill(byte value: UInt8, offset: Int = 0, bytes: Int? = nil) throws {
        try device.requireOpen()
        let count = bytes ?? (byteCount - offset)
        try device.library.check(
            device.library.api.pointee.memset!(device.handle, nil, handle, UInt64(offset), value, UInt64(count)),
            "memset(\(count) bytes at \(offset))")
    }

    /// Copies bytes from another buffer of the same device; bounces through host
    /// memory when the adapter has no `copy_d2d`.
    public func copy(from source: DeviceBuffer, sourceOffset: Int = 0, offset: Int = 0, bytes: Int) throws {
        try device.requireOpen()
        guard source.device === device else {
            throw MedleyError(.invalidArgument, "copy between buffers of different devices")
        }
        if device.library.provides("copy_d2d") {
            try device.library.check(
                device.library.api.pointee.copy_d2d!(
                    device.handle, nil, handle, UInt64(offset), source.handle, UInt64(sourceOffset), UInt64(bytes)),
                "copy_d2d(\(bytes) bytes)")
        } else {
            let staged: [UInt8] = try source.read(count: bytes, at: sourceOffset)
            try write(staged, at: offset)
        }
    }

    /// A tensor view of this buffer.
    public func tensor(_ dtype: DType, _ shape: [Int], offset: Int = 0) -> TensorView {
        TensorView(buffer: self, offset: offset, dtype: dtype, shape: shape)
    }
}

/// A dense row-major view of device memory, as ops take it.
public struct TensorView {
    /// Memory the view lies in (nil only to exercise error paths).
    public var buffer: DeviceBuffer?
    /// Byte offset from the buffer's start.
    public var offset: Int
    /// Element type.
    public var dtype: DType
    /// Dimensions, outermost first.
    public var shape: [Int]

    /// Creates a view.
    public init(buffer: DeviceBuffer?, offset: Int = 0, dtype: DType, shape: [Int]) {
        precondition(shape.count <= AdapterABI.maxRank, "rank \(shape.count) exceeds \(AdapterABI.maxRank)")
        self.buffer = buffer
        self.offset = offset
        self.dtype = dtype
        self.shape = shape
    }

    /// Number of elements.
    public var count: Int { shape.reduce(1, *) }
    /// Bytes the view covers.
    public var byteCount: Int { count * dtype.size }

    var raw: medley_tensor {
        var t = medley_tensor()
        t.buffer = buffer?.handle
        t.offset = UInt64(offset)
        t.dtype = dtype.rawValue
        t.rank = Int32(shape.count)
        withUnsafeMutableBytes(of: &t.shape) { raw in
            let dims = raw.bindMemory(to: Int64.self)
            for (i, d) in shape.enumerated() { dims[i] = Int64(d) }
        }
        return t
    }
}
