import MedleyCore

/// Averages a stage's gradients over its data-parallel ranks, weighted by how many samples
/// each rank processed, through host memory over MPI.
///
/// Gradients live in host buckets owned by the exchange (fill them with ``setGradient(named:_:)``
/// or ``withGradient(named:_:)``, the way DDP keeps gradients as views of its buckets). Each
/// ``exchange(step:sampleCount:)``:
///
/// 1. **Agrees** (``agree(step:sampleCount:)``): one allgather of 32 bytes per rank carrying
///    step, sample count n_i, the layout fingerprint and a "please negotiate" flag. That is the
///    whole steady-state overhead.
/// 2. **Negotiates** when any rank asks (first step, a changed layout) or any fingerprint or step
///    differs: every rank's framed ``BucketLayoutHeader`` is gathered (allgatherv of bytes), decoded
///    and compared with rank 0's. A difference throws `MedleyError(.mismatch)` naming the rank,
///    the bucket and the tensor, on every rank, since every rank decides on the same gathered
///    data: no rank is left waiting in a collective.
/// 3. **Reduces** every bucket to Σ w_i·g_i with w_i = n_i / Σn. The weights are known before
///    any payload moves (from step 1), so the division is folded into the reduction: small
///    buckets are scaled in place and summed with `MPI_Allreduce`; large ones go through a
///    segmented ring (reduce-scatter over `MPI_Isend`/`MPI_Irecv`, allgather over `MPI_Sendrecv`) whose combine step computes
///    `w_left·received + w_self·own` in the same pass that adds, costing no extra sweep over memory.
///    A rank with n_i = 0 takes part with weight 0. Σn = 0 is a caller error and throws
///    `invalidArgument` on every rank; a count above ``Options/maxStepSamples`` (the global
///    batch), or counts whose sum exceeds it, are `corruption` naming the rank.
/// 4. **Verifies** (only with ``Options/checksums``; see `GradientExchange+Checksums.swift`).
///
/// Not thread-safe: one exchange belongs to one thread (the one that calls MPI).
public final class GradientExchange {
    /// Settings of an exchange.
    public struct Options: Sendable {
        /// Verify every reduced bucket (two extra sweeps and one tiny collective per step). Off by default.
        public var checksums: Bool
        /// Buckets of at least this many bytes use the fused weighted ring.
        public var ringThresholdBytes: Int
        /// Buckets from this size up to the ring threshold use fused recursive doubling when the
        /// rank count is a power of two; smaller ones are scaled and summed by `MPI_Allreduce`.
        public var doublingThresholdBytes: Int
        /// Segment size of the ring's reduce-scatter: received data is combined segment by
        /// segment, so it is still in cache.
        public var segmentBytes: Int
        /// The most samples one step can have over all ranks: the job's global batch. Each
        /// rank's announced count, and their sum, must stay within it; a larger one is a
        /// corrupt count and a `.corruption` error naming the rank. Pass the job's global
        /// batch; the default only keeps the sum far from overflowing.
        public var maxStepSamples: Int

        /// The default ``maxStepSamples``: 2³², no real global batch comes near it.
        public static let defaultMaxStepSamples = 1 << 32

        /// Creates options; the defaults suit host-memory exchange on one node.
        public init(checksums: Bool = false, ringThresholdBytes: Int = 256 << 10,
                    doublingThresholdBytes: Int = 32 << 10, segmentBytes: Int = 1 << 20,
                    maxStepSamples: Int = Options.defaultMaxStepSamples) {
            self.checksums = checksums
            self.ringThresholdBytes = ringThresholdBytes
            self.doublingThresholdBytes = doublingThresholdBytes
            self.segmentBytes = segmentBytes
            self.maxStepSamples = maxStepSamples
        }
    }

    /// What one step did.
    public struct StepReport: Sendable {
        /// The step exchanged.
        public var step: UInt64
        /// Whether this step ran the full negotiation.
        public var negotiated: Bool
        /// Samples per rank, n_i.
        public var samplesPerRank: [UInt64]
        /// Σ n_i: the global batch.
        public var globalSamples: UInt64
        /// Payload bytes reduced.
        public var bytes: Int
    }

    /// A deliberate fault, for tests of the checksum path only.
    public struct FaultInjection: Sendable {
        /// When the bit is flipped.
        public enum Point: Sendable {
            /// In the rank's own contribution, after its checksum was taken (corruption before or in transit).
            case contributionAfterChecksum
            /// In the rank's reduced result (corruption after the reduction).
            case reducedPayload
        }
        /// Which rank flips a bit.
        public var rank: Int
        /// Which bucket.
        public var bucket: Int
        /// Which 32-bit element of the bucket.
        public var element: Int
        /// Which bit of it (30 is a high exponent bit of a float).
        public var bit: Int
        /// When.
        public var point: Point

        /// Creates a fault description.
        public init(rank: Int, bucket: Int, element: Int, bit: Int, point: Point) {
            self.rank = rank
            self.bucket = bucket
            self.element = element
            self.bit = bit
            self.point = point
        }
    }

    /// A private duplicate of the communicator, so exchange traffic never meets the caller's messages.
    public let communicator: Communicator
    /// Current bucket layout.
    public private(set) var layout: BucketLayout
    /// Settings; the same on every rank.
    public var options: Options
    /// Fault to inject on the next exchanges (tests only).
    public var faultInjection: FaultInjection?
    /// After a checksum mismatch (the `corruption` error ``exchange(step:sampleCount:)`` throws,
    /// the same on every rank): the ranks it names, empty when it cannot name one (the
    /// conservation check sees only the sum of every rank's contribution); nil when the last
    /// exchange's checksums held (or were off).
    public internal(set) var checksumSuspects: [Int]?

    var buckets: [UnsafeMutableRawBufferPointer] = []
    /// The checksum's weights r_j of the largest bucket's elements, made at the first checksum.
    var checksumWeightTable: [Double] = []
    var scratch: UnsafeMutableBufferPointer<Float>
    var needsNegotiation = true

    /// Creates an exchange over a duplicate of `communicator` (collective: every rank calls it).
    public init(communicator: Communicator, layout: BucketLayout, options: Options = Options()) throws {
        self.communicator = try communicator.duplicate()
        self.layout = layout
        self.options = options
        self.scratch = .allocate(capacity: 16)  // grows to the ring's largest chunk on first use
        allocateBuckets()
    }

    deinit {
        for b in buckets { b.deallocate() }
        scratch.deallocate()
        try? communicator.free()
    }

    private func allocateBuckets() {
        for b in buckets { b.deallocate() }
        buckets = layout.buckets.map { b in
            let raw = UnsafeMutableRawBufferPointer.allocate(byteCount: max(64, b.payloadBytes), alignment: 64)
            raw.initializeMemory(as: UInt8.self, repeating: 0)
            return raw
        }
    }

    /// Replaces the layout (a re-plan); bucket contents are zeroed and the next step renegotiates.
    public func setLayout(_ newLayout: BucketLayout) {
        layout = newLayout
        allocateBuckets()
        needsNegotiation = true
    }

    // MARK: Gradient access

    /// Runs `body` on the float32 gradient of tensor `name`, a view into its bucket.
    public func withGradient<R>(named name: String, _ body: (UnsafeMutableBufferPointer<Float>) throws -> R) throws -> R {
        guard let (b, t) = layout.location(of: name) else {
            throw MedleyError(.notFound, "no gradient tensor named '\(name)' in the bucket layout")
        }
        let meta = layout.buckets[b].tensors[t]
        guard meta.dtype == .float32 else {
            throw MedleyError(.unsupported, "tensor '\(name)' is \(meta.dtype); the exchange averages float32 gradients")
        }
        let base = (buckets[b].baseAddress! + meta.byteOffset).assumingMemoryBound(to: Float.self)
        return try body(UnsafeMutableBufferPointer(start: base, count: meta.elementCount))
    }

    /// Copies `values` into the gradient of tensor `name`.
    public func setGradient(named name: String, _ values: [Float]) throws {
        try withGradient(named: name) { dst in
            guard dst.count == values.count else {
                throw MedleyError(.invalidArgument, "tensor '\(name)' has \(dst.count) elements, got \(values.count)")
            }
            _ = dst.update(fromContentsOf: values)
        }
    }

    /// The gradient of tensor `name`, copied out.
    public func gradient(named name: String) throws -> [Float] {
        try withGradient(named: name) { Array($0) }
    }

    /// Runs `body` on bucket `index`'s raw payload.
    public func withBucket<R>(_ index: Int, _ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
        let b = buckets[index]
        return try body(UnsafeMutableRawBufferPointer(rebasing: b[0..<layout.buckets[index].payloadBytes]))
    }

    // MARK: The step

    /// Averages every bucket over the ranks, weighted by sample counts; see the type's documentation.
    @discardableResult
    public func exchange(step: UInt64, sampleCount: Int) throws -> StepReport {
        let agreement = try agree(step: step, sampleCount: sampleCount)
        try reduceBuckets(weights: agreement.weights)
        return StepReport(step: step, negotiated: agreement.negotiated, samplesPerRank: agreement.samples,
                          globalSamples: agreement.globalSamples, bytes: layout.totalBytes)
    }
}
