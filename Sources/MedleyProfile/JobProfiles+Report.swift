import Foundation
import MedleyCore
import MedleyPlanner

extension JobProfiles {
    /// The profiles as `medley profile` prints them: the chips, each layer kind's forward and
    /// backward milliseconds at each microbatch size, AdamW's cost, the model's per-layer
    /// memory, and the link's latency and bandwidth.
    public func table() -> String {
        var out: [String] = []
        var chipRows = [["chip", "vendor", "device", "memory", "ranks", "AdamW ms/MiB", "profile", "probe"]]
        for chip in chips {
            let p = chip.profile
            chipRows.append([
                chip.type.key, p.vendor, p.name, ByteCount.describe(UInt64(max(0, p.memoryBytes))),
                chip.type.ranks.map(String.init).joined(separator: ","),
                Self.format(p.optimizerMsPerParameterByte * Double(1 << 20)),
                chip.cached ? "cached" : "measured",
                Self.verdict(chip),
            ])
        }
        out += TextTable.render(chipRows)

        out.append("")
        out.append("one layer, ms forward / backward, by microbatch (sequences):")
        var timingRows = [["chip", "microbatch"] + ModelCost.Layer.Kind.allCases.map(Self.title)]
        for chip in chips {
            let sizes = Array(Set(chip.profile.timings.map(\.microbatch))).sorted()
            for (i, size) in sizes.enumerated() {
                var row = [i == 0 ? chip.type.key : "", String(size)]
                for kind in ModelCost.Layer.Kind.allCases {
                    if let t = chip.profile.timings.first(where: { $0.kind == kind && $0.microbatch == size }) {
                        row.append("\(Self.format(t.forwardMs)) / \(Self.format(t.backwardMs))")
                    } else {
                        row.append("does not fit")
                    }
                }
                timingRows.append(row)
            }
        }
        out += TextTable.render(timingRows, rightAligned: [1])

        out.append("")
        out.append("model: \(model.blockCount) blocks, seq \(model.seq); memory per layer:")
        var memoryRows = [["layer", "parameters", "params+grads+AdamW", "activations/seq", "output/seq"]]
        for kind in ModelCost.Layer.Kind.allCases {
            guard let layer = model.layers.first(where: { $0.kind == kind }) else { continue }
            memoryRows.append([
                Self.title(kind) + (kind == .block ? " (each)" : ""), String(layer.parameters),
                ByteCount.describe(UInt64(layer.parameters * model.bytesPerParameter)),
                ByteCount.describe(UInt64(layer.activationBytesPerSequence)),
                ByteCount.describe(UInt64(layer.outputBytesPerSequence)),
            ])
        }
        out += TextTable.render(memoryRows, rightAligned: [1, 2, 3, 4])

        out.append("")
        let n = link.network
        out.append(
            "link between ranks (MPI ping-pong, 2 ranks): latency \(Self.format(n.latencySeconds * 1e6)) µs, bandwidth \(Self.format(n.bytesPerSecond / 1e9)) GB/s (\(link.cached ? "cached" : "measured"))"
        )
        out.append("profiles cached in \(cacheDirectory)")
        return out.joined(separator: "\n")
    }

    /// Each chip's staleness probe, stored and now, as `medley profile --check` prints it.
    public func probeTable() -> String {
        var rows = [["chip", "layer ms stored", "now", "sgemm GFLOP/s stored", "now", "ratio", "verdict"]]
        for chip in chips {
            let stored = chip.staleness.map { $0.stored } ?? chip.probe
            let now = chip.staleness?.now
            rows.append([
                chip.type.key, stored.map { Self.format($0.layerMs) } ?? "-", now.map { Self.format($0.layerMs) } ?? "-",
                stored.map { String(format: "%.1f", $0.hostSgemmGflops) } ?? "-",
                now.map { String(format: "%.1f", $0.hostSgemmGflops) } ?? "-",
                chip.staleness?.ratio.map { String(format: "%.2f×", $0) } ?? "-", Self.verdict(chip),
            ])
        }
        let threshold = chips.compactMap(\.staleness).first.map { " (stale beyond ±\(Int(($0.threshold * 100).rounded())) %)" } ?? ""
        return (["staleness probe: one block layer forward+backward at microbatch \(ProfileProbe.layerMicrobatch) on the chip, host sgemm \(ProfileProbe.sgemmSize)³ on one thread; ratio = slowdown now ÷ stored\(threshold)"]
            + TextTable.render(rows, rightAligned: [1, 2, 3, 4, 5])).joined(separator: "\n")
    }

    /// A chip's probe in a word or three: "ok", "stale, re-measured", "stale, kept", "no probe,
    /// re-measured", "new" (measured by this load), "not checked".
    static func verdict(_ chip: Chip) -> String {
        guard let check = chip.staleness else { return chip.cached ? "not checked" : "new" }
        guard check.stale else { return "ok" }
        let what = check.stored == nil ? "no probe" : "stale"
        return what + (check.remeasured ? ", re-measured" : ", kept")
    }

    /// The profiles as JSON, keys as the Swift types name them (so `chips[i].profile` decodes as a
    /// ``MedleyPlanner/DeviceProfile`` and `model` as a ``MedleyPlanner/ModelCost``): `chips` (key,
    /// adapter, options, ranks, cached, cacheFile, measuredUnixMillis, profile, probe, staleness:
    /// a ``ProbeCheck`` with stored, now, layerRatio, hostRatio, ratio, threshold, stale,
    /// remeasured), `network`
    /// (latencySeconds, bytesPerSecond, cached, cacheFile, measuredUnixMillis), `model`,
    /// `microbatchSizes`, `cacheDirectory`.
    public func json() throws -> Data {
        struct ChipJSON: Encodable {
            var key: String
            var adapter: String
            var options: [String: String]
            var ranks: [Int]
            var cached: Bool
            var cacheFile: String
            var measuredUnixMillis: UInt64
            var profile: DeviceProfile
            var probe: ProfileProbe?
            var staleness: ProbeCheck?
        }
        struct NetworkJSON: Encodable {
            var latencySeconds: Double
            var bytesPerSecond: Double
            var cached: Bool
            var cacheFile: String
            var measuredUnixMillis: UInt64
        }
        struct Report: Encodable {
            var chips: [ChipJSON]
            var network: NetworkJSON
            var model: ModelCost
            var microbatchSizes: [Int]
            var cacheDirectory: String
        }
        let report = Report(
            chips: chips.map {
                ChipJSON(
                    key: $0.type.key, adapter: $0.type.adapter, options: $0.type.options, ranks: $0.type.ranks,
                    cached: $0.cached, cacheFile: $0.cacheFile, measuredUnixMillis: $0.measuredUnixMillis, profile: $0.profile,
                    probe: $0.probe, staleness: $0.staleness)
            },
            network: NetworkJSON(
                latencySeconds: link.network.latencySeconds, bytesPerSecond: link.network.bytesPerSecond,
                cached: link.cached, cacheFile: link.cacheFile, measuredUnixMillis: link.measuredUnixMillis),
            model: model, microbatchSizes: microbatchSizes, cacheDirectory: cacheDirectory)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return try encoder.encode(report)
    }

    /// "embedding", "block", "head+loss".
    static func title(_ kind: ModelCost.Layer.Kind) -> String {
        kind == .head ? "head+loss" : kind.rawValue
    }

    /// Three significant digits, without exponent for everyday magnitudes.
    static func format(_ value: Double) -> String {
        guard value.isFinite else { return "\(value)" }
        let magnitude = abs(value)
        if magnitude >= 100 || magnitude == 0 { return String(format: "%.0f", value) }
        if magnitude >= 10 { return String(format: "%.1f", value) }
        if magnitude >= 1 { return String(format: "%.2f", value) }
        if magnitude >= 0.001 { return String(format: "%.3g", value) }
        return String(format: "%.2e", value)
    }
}

/// Columns padded to their widest cell, two spaces apart.
enum TextTable {
    /// The rows as lines; columns in `rightAligned` are padded on the left.
    static func render(_ rows: [[String]], rightAligned: Set<Int> = []) -> [String] {
        let columns = rows.map(\.count).max() ?? 0
        var widths = Array(repeating: 0, count: columns)
        for row in rows { for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) } }
        return rows.map { row in
            row.enumerated().map { i, cell in
                let pad = String(repeating: " ", count: widths[i] - cell.count)
                return rightAligned.contains(i) ? pad + cell : cell + pad
            }.joined(separator: "  ")
        }.map { line in String(line.reversed().drop(while: { $0 == " " }).reversed()) }
    }
}
