import CMedleyProto
import MedleyCore

/// Owns the C memory of protobuf-c structs while Swift builds and packs them.
package final class Arena {
    private var blocks: [UnsafeMutableRawPointer] = []

    package init() {}

    package func allocate<T>(_: T.Type, count: Int) -> UnsafeMutablePointer<T> {
        let raw = UnsafeMutableRawPointer.allocate(byteCount: max(1, count) * MemoryLayout<T>.stride,
                                                   alignment: MemoryLayout<T>.alignment)
        blocks.append(raw)
        return raw.bindMemory(to: T.self, capacity: max(1, count))
    }

    package func string(_ s: String) -> UnsafeMutablePointer<CChar> {
        let utf8 = Array(s.utf8CString)
        let p = allocate(CChar.self, count: utf8.count)
        p.initialize(from: utf8, count: utf8.count)
        return p
    }

    package func shape(_ dims: [Int]) -> UnsafeMutablePointer<Int64> {
        let p = allocate(Int64.self, count: dims.count)
        for (i, d) in dims.enumerated() { p[i] = Int64(d) }
        return p
    }

    deinit { for b in blocks { b.deallocate() } }
}

/// Packs a protobuf-c message through `packedSize` and `pack` into a byte array.
package func packBytes(_ size: Int, _ pack: (UnsafeMutablePointer<UInt8>) -> Int) -> [UInt8] {
    [UInt8](unsafeUninitializedCapacity: size) { buf, count in
        count = size == 0 ? 0 : pack(buf.baseAddress!)
    }
}

// MARK: - TensorMeta

extension TensorMeta {
    fileprivate func cStruct(_ arena: Arena) -> UnsafeMutablePointer<Medley__V1__TensorMeta> {
        let m = arena.allocate(Medley__V1__TensorMeta.self, count: 1)
        medley__v1__tensor_meta__init(m)
        m.pointee.name = arena.string(name)
        m.pointee.n_shape = shape.count
        m.pointee.shape = arena.shape(shape)
        m.pointee.dtype = dtype.wire
        m.pointee.byte_offset = UInt64(byteOffset)
        return m
    }

    fileprivate init(c: UnsafePointer<Medley__V1__TensorMeta>) throws {
        let name = try validatedString(c.pointee.name, what: "tensor name")
        self.init(
            name: name,
            shape: try validatedShape(c.pointee.n_shape, c.pointee.shape, what: "tensor '\(name)' shape"),
            dtype: try DType(wire: c.pointee.dtype, what: "tensor '\(name)'"),
            byteOffset: try checkedInt(c.pointee.byte_offset, what: "tensor '\(name)' byte offset"))
    }
}

// MARK: - BucketHeader

extension BucketHeader: FramedMessage {
    /// Frames of kind ``Frame/Kind/bucketHeader``.
    public static var frameKind: Frame.Kind { .bucketHeader }

    fileprivate func cStruct(_ arena: Arena) -> UnsafeMutablePointer<Medley__V1__BucketHeader> {
        let m = arena.allocate(Medley__V1__BucketHeader.self, count: 1)
        medley__v1__bucket_header__init(m)
        m.pointee.job_id = arena.string(jobID)
        m.pointee.step = step
        m.pointee.bucket_index = UInt32(bucketIndex)
        m.pointee.n_tensors = tensors.count
        let list = arena.allocate(UnsafeMutablePointer<Medley__V1__TensorMeta>?.self, count: tensors.count)
        for (i, t) in tensors.enumerated() { list[i] = t.cStruct(arena) }
        m.pointee.tensors = list
        m.pointee.payload_bytes = UInt64(payloadBytes)
        m.pointee.sample_count = sampleCount
        m.pointee.checksum = checksum
        return m
    }

    fileprivate init(c: UnsafePointer<Medley__V1__BucketHeader>) throws {
        let n = c.pointee.n_tensors
        guard n <= WireLimits.maxTensorsPerBucket else { throw MedleyError(.corruption, "bucket header lists \(n) tensors") }
        guard n == 0 || c.pointee.tensors != nil else { throw MedleyError(.corruption, "bucket header: missing tensors") }
        var tensors: [TensorMeta] = []
        for i in 0..<n {
            guard let t = c.pointee.tensors[i] else { throw MedleyError(.corruption, "bucket header: null tensor \(i)") }
            tensors.append(try TensorMeta(c: t))
        }
        self.init(
            jobID: try validatedString(c.pointee.job_id, what: "job id"),
            step: c.pointee.step,
            bucketIndex: Int(c.pointee.bucket_index),
            tensors: tensors,
            payloadBytes: try checkedInt(c.pointee.payload_bytes, what: "payload bytes"),
            sampleCount: c.pointee.sample_count,
            checksum: c.pointee.checksum)
    }

    /// The protobuf encoding.
    public func serialized() -> [UInt8] {
        let arena = Arena()
        let m = cStruct(arena)
        return withExtendedLifetime(arena) {
            packBytes(medley__v1__bucket_header__get_packed_size(m)) { medley__v1__bucket_header__pack(m, $0) }
        }
    }

    /// Decodes and validates a protobuf encoding.
    public init(serialized bytes: [UInt8]) throws {
        let p = bytes.withUnsafeBufferPointer { medley__v1__bucket_header__unpack(nil, $0.count, $0.baseAddress) }
        guard let p else { throw MedleyError(.corruption, "bytes are not a valid BucketHeader") }
        defer { medley__v1__bucket_header__free_unpacked(p, nil) }
        try self.init(c: p)
    }
}

// MARK: - BucketLayoutHeader

extension BucketLayoutHeader: FramedMessage {
    /// Frames of kind ``Frame/Kind/bucketLayoutHeader``.
    public static var frameKind: Frame.Kind { .bucketLayoutHeader }

    /// The protobuf encoding.
    public func serialized() -> [UInt8] {
        let arena = Arena()
        let m = arena.allocate(Medley__V1__BucketLayoutHeader.self, count: 1)
        medley__v1__bucket_layout_header__init(m)
        m.pointee.job_id = arena.string(jobID)
        m.pointee.step = step
        m.pointee.n_buckets = buckets.count
        let list = arena.allocate(UnsafeMutablePointer<Medley__V1__BucketHeader>?.self, count: buckets.count)
        for (i, b) in buckets.enumerated() { list[i] = b.cStruct(arena) }
        m.pointee.buckets = list
        m.pointee.fingerprint = fingerprint
        m.pointee.sample_count = sampleCount
        return withExtendedLifetime(arena) {
            packBytes(medley__v1__bucket_layout_header__get_packed_size(m)) { medley__v1__bucket_layout_header__pack(m, $0) }
        }
    }

    /// Decodes and validates a protobuf encoding.
    public init(serialized bytes: [UInt8]) throws {
        let p = bytes.withUnsafeBufferPointer { medley__v1__bucket_layout_header__unpack(nil, $0.count, $0.baseAddress) }
        guard let p else { throw MedleyError(.corruption, "bytes are not a valid BucketLayoutHeader") }
        defer { medley__v1__bucket_layout_header__free_unpacked(p, nil) }
        let n = p.pointee.n_buckets
        guard n <= WireLimits.maxBuckets else { throw MedleyError(.corruption, "layout header lists \(n) buckets") }
        guard n == 0 || p.pointee.buckets != nil else { throw MedleyError(.corruption, "layout header: missing buckets") }
        var buckets: [BucketHeader] = []
        for i in 0..<n {
            guard let b = p.pointee.buckets[i] else { throw MedleyError(.corruption, "layout header: null bucket \(i)") }
            buckets.append(try BucketHeader(c: b))
        }
        self.init(
            jobID: try validatedString(p.pointee.job_id, what: "job id"),
            step: p.pointee.step, buckets: buckets,
            fingerprint: p.pointee.fingerprint, sampleCount: p.pointee.sample_count)
    }
}

// MARK: - ActivationHeader

extension ActivationHeader: FramedMessage {
    /// Frames of kind ``Frame/Kind/activationHeader``.
    public static var frameKind: Frame.Kind { .activationHeader }

    /// The protobuf encoding.
    public func serialized() -> [UInt8] {
        let arena = Arena()
        let m = arena.allocate(Medley__V1__ActivationHeader.self, count: 1)
        medley__v1__activation_header__init(m)
        m.pointee.step = step
        m.pointee.microbatch = UInt32(microbatch)
        m.pointee.stage = UInt32(stage)
        m.pointee.n_shape = shape.count
        m.pointee.shape = arena.shape(shape)
        m.pointee.dtype = dtype.wire
        m.pointee.checksum = checksum
        m.pointee.payload_bytes = UInt64(payloadBytes)
        return withExtendedLifetime(arena) {
            packBytes(medley__v1__activation_header__get_packed_size(m)) { medley__v1__activation_header__pack(m, $0) }
        }
    }

    /// Decodes and validates a protobuf encoding; the payload size must match shape × dtype.
    public init(serialized bytes: [UInt8]) throws {
        let p = bytes.withUnsafeBufferPointer { medley__v1__activation_header__unpack(nil, $0.count, $0.baseAddress) }
        guard let p else { throw MedleyError(.corruption, "bytes are not a valid ActivationHeader") }
        defer { medley__v1__activation_header__free_unpacked(p, nil) }
        let shape = try validatedShape(p.pointee.n_shape, p.pointee.shape, what: "activation shape")
        let dtype = try DType(wire: p.pointee.dtype, what: "activation")
        self.init(step: p.pointee.step, microbatch: Int(p.pointee.microbatch), stage: Int(p.pointee.stage),
                  shape: shape, dtype: dtype, checksum: p.pointee.checksum)
        let declared = try checkedInt(p.pointee.payload_bytes, what: "activation payload bytes")
        guard declared == payloadBytes else {
            throw MedleyError(.corruption, "activation header says \(declared) payload bytes, shape \(shape) of \(dtype) needs \(payloadBytes)")
        }
    }
}
