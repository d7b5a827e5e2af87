import Foundation
import MedleyCore

extension Plan {
    /// The plan for people: one row per stage (replica, stage, device, chip, layers, predicted
    /// forward + backward ms per microbatch, memory used and free, and on a replica's first row
    /// its sequences and microbatches), then the step's prediction, the comparison with the chip
    /// types training alone, and the devices left out with the reason.
    ///
    /// Consecutive replicas that are alike (same chips and layers) are shown once, as
    /// `first–last (n×)`; their device column shows the first and last device of each stage, and
    /// their sequences and microbatches the range over the group.
    public func table() -> String {
        let layerCount = replicas.first?.stages.last?.endLayer ?? 0
        var rows: [[String]] = [["replica", "stage", "device", "chip", "layers", "fwd+bwd ms", "memory", "free", "sequences", "microbatches"]]
        for group in groups() {
            let first = replicas[group.lowerBound]
            let last = replicas[group.upperBound - 1]
            let label = group.count == 1 ? "\(group.lowerBound)" : "\(group.lowerBound)–\(group.upperBound - 1) (\(group.count)×)"
            for (s, stage) in first.stages.enumerated() {
                let device = group.count == 1 ? "\(stage.device)" : "\(stage.device)…\(last.stages[s].device)"
                let members = replicas[group]
                rows.append([
                    s == 0 ? label : "", "\(s)", device, stage.chip, Self.describeLayers(stage.layers, count: layerCount),
                    Self.ms(stage.forwardMs) + "+" + Self.ms(stage.backwardMs),
                    Self.bytes(stage.memoryBytes), Self.bytes(stage.freeBytes),
                    s == 0 ? Self.span(members.map(\.samples)) : "", s == 0 ? Self.span(members.map(\.microbatches)) : "",
                ])
            }
        }
        let used = replicas.reduce(0) { $0 + $1.stages.count }
        var lines = [
            "plan: \(schedule)\(replicas.contains { $0.stages.count > 1 } ? " with slack \(slack)" : ""), global batch \(globalBatch) sequences in microbatches of \(microbatchSize); "
                + "\(replicas.count) replica\(replicas.count == 1 ? "" : "s") on \(used) of \(used + leftOut.count) chips",
            Self.align(rows),
        ]
        let p = prediction
        lines.append(
            "predicted step \(Self.ms(p.stepMs)) ms = compute \(Self.ms(p.computeMs)) + exchange \(Self.ms(p.exchangeMs))"
                + " + optimizer \(Self.ms(p.optimizerMs)); pipeline bubble \(String(format: "%.1f", 100 * p.bubbleFraction))%"
                + " (slowest replica)")
        var throughput = "predicted \(Self.grouped(p.tokensPerSecond)) tokens/s"
        if p.homogeneousTokensPerSecond > 0 {
            throughput += "; chip types alone: Σ \(Self.grouped(p.homogeneousTokensPerSecond)) tokens/s; efficiency "
                + String(format: "%.1f", 100 * p.efficiency) + "%"
        }
        lines.append(throughput)
        // Left-out devices, those with the same chip and reason on one line.
        var index = 0
        while index < leftOut.count {
            var end = index + 1
            while end < leftOut.count && leftOut[end].chip == leftOut[index].chip && leftOut[end].reason == leftOut[index].reason {
                end += 1
            }
            let devices = Self.describeDevices(leftOut[index..<end].map(\.device))
            lines.append("left out: \(devices) ('\(leftOut[index].chip)'): \(leftOut[index].reason)")
            index = end
        }
        return lines.joined(separator: "\n")
    }

    /// Ranges of consecutive replicas that are alike.
    private func groups() -> [Range<Int>] {
        func key(_ r: Replica) -> [String] {
            r.stages.map { "\($0.chip)|\($0.firstLayer)|\($0.endLayer)" }
        }
        var out: [Range<Int>] = []
        var start = 0
        while start < replicas.count {
            var end = start + 1
            let k = key(replicas[start])
            while end < replicas.count && key(replicas[end]) == k { end += 1 }
            out.append(start..<end)
            start = end
        }
        return out
    }

    /// Planning layers for people: `emb`, block numbers 1…L, `head`; e.g. `emb, 1–4` or `9–12, head`.
    static func describeLayers(_ layers: Range<Int>, count: Int) -> String {
        var parts: [String] = []
        if layers.lowerBound == 0 { parts.append("emb") }
        let firstBlock = max(layers.lowerBound, 1), endBlock = min(layers.upperBound, count - 1)
        if firstBlock < endBlock {
            parts.append(endBlock - firstBlock == 1 ? "\(firstBlock)" : "\(firstBlock)–\(endBlock - 1)")
        }
        if layers.upperBound == count { parts.append("head") }
        return parts.joined(separator: ", ")
    }

    /// `7`, or `7–8` when the values differ.
    static func span(_ values: [Int]) -> String {
        let (low, high) = (values.min() ?? 0, values.max() ?? 0)
        return low == high ? "\(low)" : "\(low)–\(high)"
    }

    /// `device 3`, or `devices 3, 5–9`.
    static func describeDevices(_ devices: [Int]) -> String {
        var parts: [String] = []
        var i = 0
        while i < devices.count {
            var j = i
            while j + 1 < devices.count && devices[j + 1] == devices[j] + 1 { j += 1 }
            parts.append(j == i ? "\(devices[i])" : "\(devices[i])–\(devices[j])")
            i = j + 1
        }
        return (devices.count == 1 ? "device " : "devices ") + parts.joined(separator: ", ")
    }

    static func ms(_ value: Double) -> String {
        String(format: value < 10 ? "%.3f" : value < 1000 ? "%.1f" : "%.0f", value)
    }

    static func bytes(_ value: Int) -> String {
        value < 0 ? "-" + ByteCount.describe(UInt64(-value)) : ByteCount.describe(UInt64(value))
    }

    /// A whole number with thin grouping: 1234567.8 → `1,234,568`.
    static func grouped(_ value: Double) -> String {
        guard value.isFinite else { return "\(value)" }
        let digits = String(Int(value.rounded()))
        var out = ""
        for (i, ch) in digits.reversed().enumerated() {
            if i > 0 && i % 3 == 0 && ch != "-" { out.append(",") }
            out.append(ch)
        }
        return String(out.reversed())
    }

    /// Columns aligned, two spaces apart.
    static func align(_ rows: [[String]]) -> String {
        let columns = rows.map(\.count).max() ?? 0
        let widths = (0..<columns).map { c in rows.map { c < $0.count ? $0[c].count : 0 }.max() ?? 0 }
        return rows.map { row in
            row.enumerated().map { c, cell in
                c == row.count - 1 ? cell : cell + String(repeating: " ", count: widths[c] - cell.count)
            }.joined(separator: "  ").replacingOccurrences(of: "\\s+$", with: "", options: .regularExpression)
        }.joined(separator: "\n")
    }
}
