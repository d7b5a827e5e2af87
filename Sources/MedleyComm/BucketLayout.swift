import MedleyCore

/// One bucket of gradients: tensors packed back to back in a fixed order.
public struct GradientBucket: Sendable, Hashable {
    /// Position of the bucket in its layout.
    public var index: Int
    /// Tensors in payload order, with their byte offsets inside the bucket.
    public var tensors: [TensorMeta]
    /// Payload size in bytes.
    public var payloadBytes: Int
}

/// How a stage's gradient tensors are grouped into buckets.
///
/// Tensors keep the order they are given in (every rank must give the same order) and are
/// packed into a bucket until adding the next one would pass the size cap; a tensor larger
/// than the cap gets a bucket of its own. The ``fingerprint`` identifies the layout in the
/// steady-state agreement check.
public struct BucketLayout: Sendable, Hashable {
    /// The buckets, in exchange order.
    public let buckets: [GradientBucket]
    /// The job the layout belongs to; part of the fingerprint, so two jobs never agree by accident.
    public let jobID: String
    /// A 64-bit hash of the layout: job id, names, shapes, dtypes, offsets and sizes.
    public let fingerprint: UInt64

    /// Groups `tensors` (their `byteOffset`s are ignored) into buckets of at most `capBytes`.
    public init(tensors: [TensorMeta], capBytes: Int, jobID: String = "medley") throws {
        guard capBytes > 0 else { throw MedleyError(.invalidArgument, "bucket size cap must be positive, got \(capBytes)") }
        var names = Set<String>()
        var buckets: [GradientBucket] = []
        var current: [TensorMeta] = []
        var bytes = 0
        for t in tensors {
            guard !t.name.isEmpty, names.insert(t.name).inserted else {
                throw MedleyError(.invalidArgument, "gradient tensor names must be unique and non-empty: '\(t.name)'")
            }
            guard t.shape.allSatisfy({ $0 >= 0 }) else {
                throw MedleyError(.invalidArgument, "tensor '\(t.name)' has a negative dimension: \(t.shape)")
            }
            if !current.isEmpty, bytes + t.byteCount > capBytes {
                buckets.append(GradientBucket(index: buckets.count, tensors: current, payloadBytes: bytes))
                current = []
                bytes = 0
            }
            var placed = t
            placed.byteOffset = bytes
            current.append(placed)
            bytes += t.byteCount
        }
        if !current.isEmpty { buckets.append(GradientBucket(index: buckets.count, tensors: current, payloadBytes: bytes)) }
        self.init(buckets: buckets, jobID: jobID)
    }

    /// A layout from explicit buckets (offsets as given).
    public init(buckets: [GradientBucket], jobID: String = "medley") {
        self.buckets = buckets
        self.jobID = jobID
        let plain = BucketLayoutHeader(
            jobID: jobID, step: 0,
            buckets: buckets.map { BucketHeader(jobID: jobID, step: 0, bucketIndex: $0.index, tensors: $0.tensors, payloadBytes: $0.payloadBytes) },
            fingerprint: 0, sampleCount: 0)
        self.fingerprint = Checksum.hash64(plain.serialized())
    }

    /// Total payload bytes over all buckets.
    public var totalBytes: Int { buckets.reduce(0) { $0 + $1.payloadBytes } }

    /// Where a tensor lives: its bucket index and its position in that bucket.
    public func location(of name: String) -> (bucket: Int, tensor: Int)? {
        for b in buckets {
            if let t = b.tensors.firstIndex(where: { $0.name == name }) { return (b.index, t) }
        }
        return nil
    }

    /// The header this rank announces during negotiation.
    public func header(step: UInt64, sampleCount: UInt64) -> BucketLayoutHeader {
        BucketLayoutHeader(
            jobID: jobID, step: step,
            buckets: buckets.map {
                BucketHeader(jobID: jobID, step: step, bucketIndex: $0.index, tensors: $0.tensors,
                             payloadBytes: $0.payloadBytes, sampleCount: sampleCount)
            },
            fingerprint: fingerprint, sampleCount: sampleCount)
    }
}
