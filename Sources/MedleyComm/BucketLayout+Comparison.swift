import MedleyCore

extension BucketLayoutHeader {
    /// The first way `self` (announced by rank `rank`) differs from `reference` (rank `referenceRank`),
    /// as a sentence that names the rank, the bucket and the tensor; `nil` when the layouts agree.
    ///
    /// Step and layout are compared; sample counts may differ between ranks and are not.
    public func difference(from reference: BucketLayoutHeader, rank: Int, referenceRank: Int = 0) -> String? {
        let on = "on rank \(referenceRank)"
        if jobID != reference.jobID { return "rank \(rank) is in job '\(jobID)' vs '\(reference.jobID)' \(on)" }
        if step != reference.step { return "rank \(rank) is at step \(step) vs \(reference.step) \(on)" }
        for (b, (mine, theirs)) in zip(buckets, reference.buckets).enumerated() {
            let prefix = "bucket \(b) differs on rank \(rank):"
            for (t, (x, y)) in zip(mine.tensors, theirs.tensors).enumerated() {
                if x.name != y.name { return "\(prefix) tensor \(t) is '\(x.name)' vs '\(y.name)' \(on)" }
                if x.shape != y.shape { return "\(prefix) tensor '\(x.name)' shape \(fmt(x.shape)) vs \(fmt(y.shape)) \(on)" }
                if x.dtype != y.dtype { return "\(prefix) tensor '\(x.name)' dtype \(x.dtype) vs \(y.dtype) \(on)" }
                if x.byteOffset != y.byteOffset { return "\(prefix) tensor '\(x.name)' byte offset \(x.byteOffset) vs \(y.byteOffset) \(on)" }
            }
            if mine.tensors.count != theirs.tensors.count {
                let extra = mine.tensors.count > theirs.tensors.count
                    ? "tensor '\(mine.tensors[theirs.tensors.count].name)' only on rank \(rank)"
                    : "tensor '\(theirs.tensors[mine.tensors.count].name)' missing on rank \(rank)"
                return "\(prefix) \(mine.tensors.count) tensors vs \(theirs.tensors.count) \(on) (\(extra))"
            }
            if mine.payloadBytes != theirs.payloadBytes { return "\(prefix) payload \(mine.payloadBytes) bytes vs \(theirs.payloadBytes) \(on)" }
        }
        if buckets.count != reference.buckets.count {
            return "rank \(rank) has \(buckets.count) buckets vs \(reference.buckets.count) \(on)"
        }
        if fingerprint != reference.fingerprint {
            return "rank \(rank) layout fingerprint \(hex(fingerprint)) vs \(hex(reference.fingerprint)) \(on) (different Medley builds?)"
        }
        return nil
    }
}

/// Compares every rank's announced layout with the majority's (the most common job, step and
/// fingerprint; ties go to the lowest rank, so with agreement on nothing it is rank 0). The error
/// names the first rank that differs, the bucket and the tensor, and how many other ranks differ.
/// Every rank runs this on the same gathered headers, so every rank throws the same error.
func checkLayoutsAgree(_ headers: [BucketLayoutHeader]) throws {
    guard !headers.isEmpty else { return }
    struct Key: Hashable { var job: String; var step: UInt64; var fingerprint: UInt64 }
    var votes: [Key: (count: Int, first: Int)] = [:]
    for (rank, h) in headers.enumerated() {
        let k = Key(job: h.jobID, step: h.step, fingerprint: h.fingerprint)
        votes[k] = ((votes[k]?.count ?? 0) + 1, votes[k]?.first ?? rank)
    }
    let referenceRank = votes.values.max { a, b in a.count != b.count ? a.count < b.count : a.first > b.first }!.first
    let reference = headers[referenceRank]
    var first: String?
    var others = 0
    for (rank, h) in headers.enumerated() where rank != referenceRank {
        if let d = h.difference(from: reference, rank: rank, referenceRank: referenceRank) {
            if first == nil { first = d } else { others += 1 }
        }
    }
    if let first {
        let more = others > 0 ? " (and \(others) more rank\(others == 1 ? "" : "s") differ)" : ""
        throw MedleyError(.mismatch, "gradient buckets disagree: \(first)\(more)")
    }
}

private func fmt(_ shape: [Int]) -> String { "[" + shape.map(String.init).joined(separator: ",") + "]" }
private func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }
