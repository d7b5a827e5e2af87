import MedleyCore

/// A rank's weighted linear checksum of its own contribution to one bucket.
struct ContributionSum {
    /// Σ_j r_j·(w·x_j), in double precision.
    var sum: Double
    /// Σ_j r_j·|w·x_j|: the scale of the rounding error the reduction may add.
    var magnitude: Double
}

/// The pseudo-random weight r_j ∈ [1, 2) of element j in the linear checksum.
@inline(__always)
private func checksumWeight(_ j: Int) -> Double {
    1.0 + Double((UInt32(truncatingIfNeeded: j) &* 2_654_435_761) >> 16) * (1.0 / 65536.0)
}

// Checksums (`Options.checksums`, off by default) catch silent corruption with two checks,
// both decided from one allgather, so every rank throws the same error:
//
// 1. Identical results. After the reduction every rank hashes its reduced bucket
//    (`Checksum.hash64`). All ranks must hold bitwise identical bytes (the ring computes each
//    chunk once and copies it; MPI_Allreduce gives identical results on a homogeneous
//    node), so any hash that differs from rank 0's names a rank whose result was corrupted
//    after or during the allgather phase, however small the flip.
// 2. Conservation. Before sending, each rank takes a weighted linear checksum of its scaled
//    contribution, s_i = Σ_j r_j·w_i·x_ij (r_j fixed pseudo-random weights in [1, 2)), and
//    after the reduction the checksum of the result, t = Σ_j r_j·y_j. A correct reduction
//    gives t = Σ_i s_i up to float32 rounding, bounded by 2(p+2)·2⁻²⁴·Σ_i Σ_j r_j·|w_i·x_ij|.
//    A contribution corrupted after its checksum (in host memory or in transit, before the
//    reduction) moves t by r_j times the change. Flips that change an element by less than the
//    rounding bound (low mantissa bits) are below what any float checksum of a sum can see;
//    exponent and high mantissa flips are caught.
//
// Cost when on: one sweep over the bucket before and one after, plus one allgather of
// 4 words per bucket per rank.
extension GradientExchange {
    /// r_j for j in 0 ..< count (made once, then read).
    func weightTable(count: Int) -> [Double] {
        if checksumWeightTable.count < count {
            let largest = max(count, layout.buckets.map { $0.payloadBytes / 4 }.max() ?? 0)
            checksumWeightTable = (0..<largest).map(checksumWeight)
        }
        return checksumWeightTable
    }

    func contributionSum(bucket b: Int, weight: Float) -> ContributionSum {
        let count = layout.buckets[b].payloadBytes / 4
        let x = buckets[b].baseAddress!.assumingMemoryBound(to: Float.self)
        let table = weightTable(count: count)
        // Four independent sums: the rounding bound below holds for any order.
        var s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0, m0 = 0.0, m1 = 0.0, m2 = 0.0, m3 = 0.0
        table.withUnsafeBufferPointer { r in
            var j = 0
            while j + 4 <= count {
                let v0 = Double(x[j]) * r[j], v1 = Double(x[j + 1]) * r[j + 1]
                let v2 = Double(x[j + 2]) * r[j + 2], v3 = Double(x[j + 3]) * r[j + 3]
                s0 += v0; s1 += v1; s2 += v2; s3 += v3
                m0 += abs(v0); m1 += abs(v1); m2 += abs(v2); m3 += abs(v3)
                j += 4
            }
            while j < count {
                let v = Double(x[j]) * r[j]
                s0 += v
                m0 += abs(v)
                j += 1
            }
        }
        let w = Double(weight)
        return ContributionSum(sum: ((s0 + s1) + (s2 + s3)) * w, magnitude: ((m0 + m1) + (m2 + m3)) * abs(w))
    }

    private func resultSums(bucket b: Int) -> (hash: UInt64, sum: Double) {
        let bytes = layout.buckets[b].payloadBytes
        let raw = UnsafeRawBufferPointer(start: buckets[b].baseAddress!, count: bytes)
        let y = raw.baseAddress!.assumingMemoryBound(to: Float.self)
        let count = bytes / 4
        let table = weightTable(count: count)
        var t0 = 0.0, t1 = 0.0, t2 = 0.0, t3 = 0.0
        table.withUnsafeBufferPointer { r in
            var j = 0
            while j + 4 <= count {
                t0 += Double(y[j]) * r[j]; t1 += Double(y[j + 1]) * r[j + 1]
                t2 += Double(y[j + 2]) * r[j + 2]; t3 += Double(y[j + 3]) * r[j + 3]
                j += 4
            }
            while j < count {
                t0 += Double(y[j]) * r[j]
                j += 1
            }
        }
        return (Checksum.hash64(raw), (t0 + t1) + (t2 + t3))
    }

    func verify(_ contributions: [ContributionSum]) throws {
        checksumSuspects = nil
        let nb = layout.buckets.count
        var record: [UInt64] = []
        record.reserveCapacity(4 * nb)
        for b in 0..<nb {
            let (h, t) = resultSums(bucket: b)
            record += [h, contributions[b].sum.bitPattern, contributions[b].magnitude.bitPattern, t.bitPattern]
        }
        let all = try communicator.allgather(record)
        let p = communicator.size
        func word(_ rank: Int, _ b: Int, _ k: Int) -> UInt64 { all[rank * 4 * nb + 4 * b + k] }
        for b in 0..<nb {
            let h0 = word(0, b, 0)
            let differing = (1..<max(1, p)).filter { word($0, b, 0) != h0 }
            if let first = differing.first {
                let who = differing.count == p - 1 && p > 2 ? "rank 0 (all \(p - 1) others agree with each other)" : "rank \(first)"
                checksumSuspects = differing.count == p - 1 && p > 2 ? [0] : differing
                throw MedleyError(.corruption, "bucket \(b): silent corruption: the reduced payload on \(who) differs (hash \(hex(word(first, b, 0))) vs \(hex(h0)) on rank 0)")
            }
            var expected = 0.0, magnitude = 0.0
            for r in 0..<p {
                expected += Double(bitPattern: word(r, b, 1))
                magnitude += Double(bitPattern: word(r, b, 2))
            }
            // A contribution that is not finite is a chip's bad numbers, not a corrupted payload:
            // the caller's checks of the loss and the gradient norm name it.
            if !(expected.isFinite && magnitude.isFinite) { continue }
            let got = Double(bitPattern: word(0, b, 3))
            let tolerance = 2.0 * Double(p + 2) * 0x1p-24 * magnitude + 1e-30
            if !(abs(got - expected) <= tolerance) {
                checksumSuspects = []
                throw MedleyError(.corruption, "bucket \(b): silent corruption: the reduced payload does not add up to the ranks' contributions (checksum \(got) vs \(expected), tolerance \(tolerance)); a contribution was corrupted before or during the reduction")
            }
        }
    }
}

private func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }
