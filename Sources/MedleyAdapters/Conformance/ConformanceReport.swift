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

    /// Column widths of the table: fixed, so that rows can be printed as they come.
    static let groupWidth = 8, itemWidth = 24

    private static func pad(_ s: String, _ n: Int) -> String { s + String(repeating: " ", count: max(0, n - s.count)) }

    /// The table's heading line.
    public static func header() -> String {
        "\(pad("group", groupWidth))  \(pad("item", itemWidth))  result  detail"
    }

    /// One row of the table.
    public static func line(_ row: Row) -> String {
        "\(pad(row.group, groupWidth))  \(pad(row.item, itemWidth))  \(pad(row.status.rawValue.uppercased(), 6))  \(row.detail)"
    }

    /// The report as a text table followed by a one-line verdict.
    public func table() -> String {
        ([Self.header()] + rows.map(Self.line) + [verdict()]).joined(separator: "\n")
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
