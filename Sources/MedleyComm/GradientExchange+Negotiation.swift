import MedleyCore

extension GradientExchange {
    /// What the ranks agreed on for one step.
    public struct Agreement: Sendable {
        /// Samples per rank, n_i.
        public var samples: [UInt64]
        /// Σ n_i.
        public var globalSamples: UInt64
        /// w_i = n_i / Σn, per rank.
        public var weights: [Float]
        /// Whether the full negotiation ran.
        public var negotiated: Bool
    }

    private static let flagNegotiate: UInt64 = 1
    private static let flagBadSampleCount: UInt64 = 2

    /// Makes the ranks agree on step, layout and sample counts for one step (collective).
    ///
    /// Steady state: one `MPI_Allgather` of four 64-bit words per rank, `[step, n_i, fingerprint, flags]`.
    /// When any rank asks for negotiation or any step or fingerprint differs, every rank sees it in the
    /// same gathered words and runs the full negotiation together. Throws on every rank alike.
    ///
    /// Every count is checked against ``Options/maxStepSamples`` and summed with overflow
    /// checks before it is used (``PeerLimits/checkedSampleTotal(_:limit:step:)``): a rank
    /// announcing an impossible count is a `.corruption` error naming it, on every rank.
    public func agree(step: UInt64, sampleCount: Int) throws -> Agreement {
        // A bad argument on one rank is reported through the collective, so every rank throws.
        let n = UInt64(max(0, sampleCount))
        let flags = (needsNegotiation ? Self.flagNegotiate : 0) | (sampleCount < 0 ? Self.flagBadSampleCount : 0)
        let record: [UInt64] = [step, n, layout.fingerprint, flags]
        let all = try communicator.allgather(record)
        let size = communicator.size
        var samples = [UInt64](repeating: 0, count: size)
        var mustNegotiate = false
        if let bad = (0..<size).first(where: { all[4 * $0 + 3] & Self.flagBadSampleCount != 0 }) {
            throw MedleyError(.invalidArgument, "step \(step): rank \(bad) passed a negative sample count")
        }
        for r in 0..<size {
            samples[r] = all[4 * r + 1]
            if all[4 * r] != all[0] || all[4 * r + 2] != all[2] || all[4 * r + 3] & Self.flagNegotiate != 0 {
                mustNegotiate = true
            }
        }
        if mustNegotiate {
            try negotiate(step: step, sampleCount: n)
            needsNegotiation = false
        }
        let total = try PeerLimits.checkedSampleTotal(samples, limit: options.maxStepSamples, step: step)
        guard total > 0 else {
            throw MedleyError(.invalidArgument, "step \(step): the global batch has zero samples (every rank passed sampleCount 0); there is nothing to average")
        }
        let weights = samples.map { Float(Double($0) / Double(total)) }
        return Agreement(samples: samples, globalSamples: total, weights: weights, negotiated: mustNegotiate)
    }

    /// The most bytes any rank's framed layout header may take in a negotiation where the
    /// smallest announced one is `smallest`: twice that plus 4 KiB (within the frame limit).
    ///
    /// Ranks with the same layout announce headers within a few bytes of each other (step and
    /// sample counts are varints), and a somewhat different layout still fits, so its
    /// difference is reported tensor by tensor. A header far larger than every other rank's
    /// cannot describe the same job and is refused before any buffer is sized from it. The
    /// bound depends only on gathered sizes, so every rank computes the same one.
    static func layoutFrameLimit(smallest: Int) -> Int {
        min(Frame.headerSize + Frame.defaultMaxBodyBytes, 2 * max(0, smallest) + 4096)
    }

    /// Gathers every rank's framed layout header and compares it with rank 0's.
    private func negotiate(step: UInt64, sampleCount: UInt64) throws {
        let mine = layout.header(step: step, sampleCount: sampleCount).framed()
        // Sizes first: the buffer for everyone's headers is sized only from checked claims.
        let sizes = try communicator.allgather([Int64(mine.count)]).map { Int(clamping: $0) }
        let limit = Self.layoutFrameLimit(smallest: sizes.min() ?? 0)
        for (rank, size) in sizes.enumerated() {
            try PeerLimits.check(size, allowed: limit, peer: rank, what: "bytes of bucket layout header (the smallest rank's is \(sizes.min() ?? 0))",
                                 context: "step \(step)")
        }
        let gathered = try communicator.allgatherv(mine, maxCountPerRank: limit)
        var headers: [BucketLayoutHeader] = []
        var undecodable: [(Int, MedleyError)] = []
        for (rank, bytes) in gathered.enumerated() {
            do {
                headers.append(try BucketLayoutHeader(framed: bytes))
            } catch let e as MedleyError {
                undecodable.append((rank, e))
                headers.append(BucketLayoutHeader(jobID: "", step: 0, buckets: [], fingerprint: 0, sampleCount: 0))
            }
        }
        if let (rank, e) = undecodable.first {
            throw MedleyError(.corruption, "the bucket layout header from rank \(rank) cannot be decoded: \(e.message)")
        }
        try checkLayoutsAgree(headers)
        for b in layout.buckets {
            if let t = b.tensors.first(where: { $0.dtype != .float32 }) {
                throw MedleyError(.unsupported, "bucket \(b.index): tensor '\(t.name)' is \(t.dtype); the exchange averages float32 gradients only")
            }
        }
    }
}
