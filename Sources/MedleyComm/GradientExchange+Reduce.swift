import CMPI
import MedleyCore

/// Tag of the exchange's ring traffic (on the exchange's private communicator).
private let ringTag = 0x4D44

extension GradientExchange {
    /// Reduces every bucket to Σ w_i·g_i (collective), then verifies when checksums are on.
    func reduceBuckets(weights: [Float]) throws {
        var contributions: [ContributionSum] = []
        if options.checksums {
            contributions = layout.buckets.indices.map { contributionSum(bucket: $0, weight: weights[communicator.rank]) }
        }
        for b in layout.buckets.indices {
            injectFault(bucket: b, at: .contributionAfterChecksum)
            let count = layout.buckets[b].payloadBytes / 4
            let base = buckets[b].baseAddress!.assumingMemoryBound(to: Float.self)
            let data = UnsafeMutableBufferPointer(start: base, count: count)
            if communicator.size == 1 {
                scale(data, by: weights[0])
            } else if layout.buckets[b].payloadBytes >= options.ringThresholdBytes && count >= communicator.size {
                try weightedRing(data, weights: weights)
            } else if layout.buckets[b].payloadBytes >= options.doublingThresholdBytes
                        && communicator.size & (communicator.size - 1) == 0 {
                try weightedDoubling(data, weights: weights)
            } else {
                scale(data, by: weights[communicator.rank])
                try communicator.allreduce(inPlace: data, op: .sum)
            }
            injectFault(bucket: b, at: .reducedPayload)
        }
        if options.checksums { try verify(contributions) }
    }

    private func injectFault(bucket: Int, at point: FaultInjection.Point) {
        guard let f = faultInjection, f.point == point, f.rank == communicator.rank, f.bucket == bucket else { return }
        let words = buckets[bucket].baseAddress!.assumingMemoryBound(to: UInt32.self)
        precondition(f.element < layout.buckets[bucket].payloadBytes / 4, "fault element outside the bucket")
        words[f.element] ^= UInt32(1) << UInt32(f.bit)
    }

    /// Multiplies a buffer by `w` in place (skipped when w is 1).
    private func scale(_ data: UnsafeMutableBufferPointer<Float>, by w: Float) {
        guard w != 1, let p = data.baseAddress else { return }
        for i in 0..<data.count { p[i] *= w }
    }

    /// Recursive doubling (power-of-two rank counts) with the weighting fused into the first
    /// combine: log2(p) exchanges of the whole buffer, one handshake each, which beats the
    /// ring's 2(p−1) hops for mid-sized buckets.
    ///
    /// Hop 1 pairs r with r^1 and stores `w_peer·received + w_self·own`; hop d pairs r with r^d and
    /// stores `received + own`. IEEE addition is commutative and both partners add the same two
    /// values, so partners, and in the end all ranks, hold bitwise identical results.
    func weightedDoubling(_ data: UnsafeMutableBufferPointer<Float>, weights: [Float]) throws {
        let p = communicator.size, r = communicator.rank
        let count = data.count
        if scratch.count < count {
            scratch.deallocate()
            scratch = .allocate(capacity: count)
        }
        let x = data.baseAddress!, tmp = scratch.baseAddress!
        var distance = 1
        while distance < p {
            let partner = r ^ distance
            try communicator.sendReceive(
                UnsafeBufferPointer(start: x, count: count), to: partner,
                into: UnsafeMutableBufferPointer(start: tmp, count: count), from: partner, tag: ringTag)
            if distance == 1 {
                let wPeer = weights[partner], wSelf = weights[r]
                for i in 0..<count { x[i] = wPeer * tmp[i] + wSelf * x[i] }
            } else {
                for i in 0..<count { x[i] = tmp[i] + x[i] }
            }
            distance <<= 1
        }
    }

    /// Ring allreduce with the weighting fused into the combine step.
    ///
    /// Chunk c of the buffer travels around the ring; at the first hop a rank receives its left
    /// neighbour's raw chunk and stores `w_left·recv + w_self·own`, at later hops `recv + w_self·own`.
    /// After p−1 hops rank r holds the finished chunk (r+1) mod p, computed once; p−1 more hops
    /// hand finished chunks around, so every rank ends with bitwise identical results.
    ///
    /// Within a hop every segment's receive and send are posted at once; the rank then waits for
    /// the segments in order and combines each while it is still in cache. All ranks cut chunks
    /// into the same number of segments, so the messages pair up on every rank.
    func weightedRing(_ data: UnsafeMutableBufferPointer<Float>, weights: [Float]) throws {
        let p = communicator.size, r = communicator.rank
        let count = data.count
        let right = (r + 1) % p, left = (r + p - 1) % p
        let base = count / p, extra = count % p
        func chunk(_ c: Int) -> (start: Int, count: Int) {
            (c * base + min(c, extra), base + (c < extra ? 1 : 0))
        }
        let maxChunk = base + (extra > 0 ? 1 : 0)
        let segment = max(1, options.segmentBytes / 4)
        let segments = max(1, (maxChunk + segment - 1) / segment)
        if scratch.count < maxChunk {
            scratch.deallocate()
            scratch = .allocate(capacity: maxChunk)
        }
        let x = data.baseAddress!
        let tmp = scratch.baseAddress!
        let wSelf = weights[r]
        var receives = [MPI_Request?](repeating: nil, count: segments)
        var sends = [MPI_Request?](repeating: nil, count: segments)

        // Reduce-scatter.
        for k in 0..<(p - 1) {
            let send = chunk((r - k + 2 * p) % p)
            let recv = chunk((r - k - 1 + 2 * p) % p)
            let wLeft: Float = k == 0 ? weights[left] : 1
            for j in 0..<segments {
                let r0 = min(recv.count, j * segment), r1 = min(recv.count, (j + 1) * segment)
                receives[j] = try communicator.startReceive(UnsafeMutableBufferPointer(start: tmp + r0, count: r1 - r0), from: left, tag: ringTag)
            }
            for j in 0..<segments {
                let s0 = min(send.count, j * segment), s1 = min(send.count, (j + 1) * segment)
                sends[j] = try communicator.startSend(UnsafeBufferPointer(start: x + send.start + s0, count: s1 - s0), to: right, tag: ringTag)
            }
            for j in 0..<segments {
                try communicator.wait(&receives[j])
                let r0 = min(recv.count, j * segment), r1 = min(recv.count, (j + 1) * segment)
                let src = tmp + r0, dst = x + recv.start + r0
                if k == 0 {
                    for i in 0..<(r1 - r0) { dst[i] = wLeft * src[i] + wSelf * dst[i] }
                } else {
                    for i in 0..<(r1 - r0) { dst[i] = src[i] + wSelf * dst[i] }
                }
            }
            for j in 0..<segments { try communicator.wait(&sends[j]) }
        }
        // Allgather of the finished chunks: one message per hop.
        for k in 0..<(p - 1) {
            let send = chunk((r + 1 - k + 2 * p) % p)
            let recv = chunk((r - k + 2 * p) % p)
            try communicator.sendReceive(
                UnsafeBufferPointer(start: x + send.start, count: send.count), to: right,
                into: UnsafeMutableBufferPointer(start: x + recv.start, count: recv.count), from: left, tag: ringTag)
        }
    }
}
