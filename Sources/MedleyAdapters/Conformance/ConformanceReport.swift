import Foundation

/// What `medley adapter check` found: one row per check, and whether all passed.
public struct ConformanceReport: Codable, Sendable {
    /// Outcome of one check.
    public enum Status: String, Codable, Sendable {
        case pass, fail, skip
    }

    /// One check: a group (table, device, memory, op, gradient, error), the item, and what happened.
    public struct Row: Codable, Sendable {
        public var group: String
        public var item: String
        public var status: Status
        public var detail: String
    }

    /// Adapter name from its plugin info (or what was asked for, if it never loaded).
    public var adapter: String
    /// Library path.
    public var path: String
    /// Options the device was opened with.
    public var options: [String: String]
    /// Tolerance used for op comparisons.
    public var tolerance: Tolerance
    /// Every check in order.
    public var rows: [Row]

    /// True when no row failed.
    public var passed: Bool { !rows.contains { $0.status == .fail } }
    /// Rows that failed.
    public var failures: [Row] { rows.filter { $0.status == .fail } }

    mutating func add(_ group: String, _ item: String, _ status: Status, _ detail: String = "") {
        rows.append(Row(group: group, item: item, status: status, detail: detail))
    }

    /// The report as an aligned text table followed by a one-line verdict.
    public func table() -> String {
        let groupWidth = max(5, rows.map(\.group.count).max() ?? 0)
        let itemWidth = max(4, rows.map(\.item.count).max() ?? 0)
        func pad(_ s: String, _ n: Int) -> String { s + String(repeating: " ", count: max(0, n - s.count)) }
        var lines = ["\(pad("group", groupWidth))  \(pad("item", itemWidth))  result  detail"]
        for row in rows {
            lines.append(
                "\(pad(row.group, groupWidth))  \(pad(row.item, itemWidth))  \(pad(row.status.rawValue.uppercased(), 6))  \(row.detail)"
            )
        }
        lines.append(verdict())
        return lines.joined(separator: "\n")
    }

    /// One line: PASS with counts, or FAIL naming the first failure.
    public func verdict() -> String {
        let passes = rows.filter { $0.status == .pass }.count
        let skips = rows.filter { $0.status == .skip }.count
        if let first = failures.first {
            return "adapter \(adapter): FAIL (\(failures.count) of \(rows.count) checks failed; first: "
                + "\(first.group) \(first.item): \(first.detail))"
        }
        return "adapter \(adapter): PASS (\(passes) checks passed, \(skips) skipped)"
    }

    /// The report as pretty-printed JSON.
    public func json() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        var object = try JSONSerialization.jsonObject(with: encoder.encode(self)) as? [String: Any] ?? [:]
        object["passed"] = passed
        let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }
}
