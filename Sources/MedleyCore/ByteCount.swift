import Foundation

/// Byte counts as people write them: parsed from `64KiB`, `256MiB`, `1GiB`, `4096`, and described.
public enum ByteCount {
    /// Parses a size; throws `invalidArgument` on anything else.
    public static func parse(_ text: String) throws -> Int {
        let units: [(String, Int)] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10), ("B", 1)]
        let t = text.trimmingCharacters(in: .whitespaces)
        for (suffix, factor) in units where t.hasSuffix(suffix) {
            if let n = Int(t.dropLast(suffix.count)), n >= 0 { return n * factor }
        }
        if let n = Int(t), n >= 0 { return n }
        throw MedleyError(.invalidArgument, "'\(text)' is not a size (examples: 4096, 64KiB, 256MiB)")
    }

    /// A byte count for people, with a binary unit and one decimal: `512 B`, `1.9 MiB`, `23.4 GiB`;
    /// `compact` drops the decimal from 10 up (`24 GiB`), for narrow columns.
    public static func describe(_ bytes: UInt64, compact: Bool = false) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(bytes)
        var unit = 0
        while value >= 1024 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        if unit == 0 { return "\(bytes) B" }
        if compact && value >= 10 { return "\(Int(value.rounded())) \(units[unit])" }
        return String(format: "%.1f", value) + " " + units[unit]
    }
}
