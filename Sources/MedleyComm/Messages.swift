import CMedleyProto
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import MedleyCore

/// Element type of a tensor, as `protos/medley.proto` numbers it.
public enum DType: UInt32, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// 32-bit IEEE float.
    case float32 = 1
    /// 64-bit IEEE float.
    case float64 = 2
    /// 16-bit IEEE float.
    case float16 = 3
    /// bfloat16.
    case bfloat16 = 4
    /// 32-bit signed integer.
    case int32 = 5
    /// 64-bit signed integer.
    case int64 = 6
    /// Unsigned byte.
    case uint8 = 7

    /// Bytes per element.
    public var byteWidth: Int {
        switch self {
        case .float32, .int32: 4
        case .float64, .int64: 8
        case .float16, .bfloat16: 2
        case .uint8: 1
        }
    }

    /// The lowercase name, e.g. `float32`.
    public var description: String {
        switch self {
        case .float32: "float32"
        case .float64: "float64"
        case .float16: "float16"
        case .bfloat16: "bfloat16"
        case .int32: "int32"
        case .int64: "int64"
        case .uint8: "uint8"
        }
    }

    init(wire: Medley__V1__DType, what: String) throws {
        guard let d = DType(rawValue: UInt32(truncatingIfNeeded: wire.rawValue)) else {
            throw MedleyError(.corruption, "\(what): unknown dtype \(wire.rawValue)")
        }
        self = d
    }

    package var wire: Medley__V1__DType { Medley__V1__DType(rawValue: numericCast(rawValue)) }
}

/// One tensor's place in a bucket (`TensorMeta` in the proto).
public struct TensorMeta: Sendable, Hashable {
    /// Global name, e.g. `h.1.attn.w`.
    public var name: String
    /// Dimensions, outermost first.
    public var shape: [Int]
    /// Element type.
    public var dtype: DType
    /// Where the tensor starts in its bucket's payload.
    public var byteOffset: Int

    /// Creates tensor metadata.
    public init(name: String, shape: [Int], dtype: DType, byteOffset: Int = 0) {
        self.name = name
        self.shape = shape
        self.dtype = dtype
        self.byteOffset = byteOffset
    }

    /// Number of elements (product of the shape).
    public var elementCount: Int { shape.reduce(1, *) }
    /// Number of bytes.
    public var byteCount: Int { elementCount * dtype.byteWidth }
}

/// One gradient bucket as a rank describes it (`BucketHeader` in the proto).
public struct BucketHeader: Sendable, Hashable {
    /// The job this rank belongs to.
    public var jobID: String
    /// The training step.
    public var step: UInt64
    /// Position of the bucket in the layout.
    public var bucketIndex: Int
    /// Tensors in payload order.
    public var tensors: [TensorMeta]
    /// Payload size in bytes.
    public var payloadBytes: Int
    /// Samples this rank processed this step.
    public var sampleCount: UInt64
    /// Payload checksum, 0 when checksums are off.
    public var checksum: UInt64

    /// Creates a bucket header.
    public init(jobID: String, step: UInt64, bucketIndex: Int, tensors: [TensorMeta], payloadBytes: Int,
                sampleCount: UInt64 = 0, checksum: UInt64 = 0) {
        self.jobID = jobID
        self.step = step
        self.bucketIndex = bucketIndex
        self.tensors = tensors
        self.payloadBytes = payloadBytes
        self.sampleCount = sampleCount
        self.checksum = checksum
    }
}

/// A rank's whole bucket layout for a step: what negotiation gathers and compares.
public struct BucketLayoutHeader: Sendable, Hashable {
    /// The job this rank belongs to.
    public var jobID: String
    /// The training step.
    public var step: UInt64
    /// Buckets in exchange order.
    public var buckets: [BucketHeader]
    /// Hash of the layout (names, shapes, dtypes, offsets, sizes), not of step or samples.
    public var fingerprint: UInt64
    /// Samples this rank processed this step.
    public var sampleCount: UInt64

    /// Creates a layout header.
    public init(jobID: String, step: UInt64, buckets: [BucketHeader], fingerprint: UInt64, sampleCount: UInt64) {
        self.jobID = jobID
        self.step = step
        self.buckets = buckets
        self.fingerprint = fingerprint
        self.sampleCount = sampleCount
    }
}

/// Precedes an activation (or its gradient) sent between pipeline stages (`ActivationHeader`).
public struct ActivationHeader: Sendable, Hashable {
    /// The training step.
    public var step: UInt64
    /// The microbatch within the step.
    public var microbatch: Int
    /// The sending stage.
    public var stage: Int
    /// Payload dimensions.
    public var shape: [Int]
    /// Payload element type.
    public var dtype: DType
    /// Payload checksum (``Checksum/hash64(_:seed:)``), 0 when off.
    public var checksum: UInt64
    /// Payload size in bytes (must equal shape × dtype width).
    public var payloadBytes: Int

    /// Creates an activation header; `payloadBytes` follows from shape and dtype.
    public init(step: UInt64, microbatch: Int, stage: Int, shape: [Int], dtype: DType, checksum: UInt64 = 0) {
        self.step = step
        self.microbatch = microbatch
        self.stage = stage
        self.shape = shape
        self.dtype = dtype
        self.checksum = checksum
        self.payloadBytes = shape.reduce(1, *) * dtype.byteWidth
    }
}

// MARK: - Limits checked on decode

/// Limits a decoded message must respect: a peer's bytes are never trusted.
enum WireLimits {
    static let maxDims = 16
    static let maxDim = 1 << 40
    static let maxTensorsPerBucket = 1 << 16
    static let maxBuckets = 1 << 16
    static let maxNameBytes = 1024
}

package func validatedShape(_ count: Int, _ dims: UnsafePointer<Int64>?, what: String) throws -> [Int] {
    guard count <= WireLimits.maxDims else { throw MedleyError(.corruption, "\(what): \(count) dimensions, at most \(WireLimits.maxDims) allowed") }
    guard count == 0 || dims != nil else { throw MedleyError(.corruption, "\(what): missing dimensions") }
    var shape: [Int] = []
    var elements = 1
    for i in 0..<count {
        let d = dims![i]
        guard d >= 0, d <= WireLimits.maxDim else { throw MedleyError(.corruption, "\(what): dimension \(d) out of range") }
        let (m, overflow) = elements.multipliedReportingOverflow(by: Int(d))
        guard !overflow, m <= WireLimits.maxDim else { throw MedleyError(.corruption, "\(what): shape too large") }
        elements = m
        shape.append(Int(d))
    }
    return shape
}

package func validatedString(
    _ p: UnsafeMutablePointer<CChar>?, what: String, maxBytes: Int = WireLimits.maxNameBytes
) throws -> String {
    guard let p else { return "" }
    let length = strnlen(p, maxBytes + 1)
    guard length <= maxBytes else { throw MedleyError(.corruption, "\(what): longer than \(maxBytes) bytes") }
    let bytes = UnsafeRawBufferPointer(start: p, count: length)
    guard let s = String(validating: bytes, as: UTF8.self) else {
        throw MedleyError(.corruption, "\(what): not valid UTF-8")
    }
    return s
}

package func checkedInt(_ v: UInt64, what: String) throws -> Int {
    guard v <= UInt64(Int.max / 2) else { throw MedleyError(.corruption, "\(what): value \(v) out of range") }
    return Int(v)
}
