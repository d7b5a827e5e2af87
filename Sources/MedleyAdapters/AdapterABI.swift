import CMedleyAdapter

/// The adapter ABI as this host speaks it: versions, the table's entries and the opset.
///
/// Everything here is read from `adapters/include/medley_adapter.h` through its
/// X-macros, so the header stays the one place that says which entries are
/// required and which ops exist.
public enum AdapterABI {
    /// ABI major version this host accepts.
    public static let major = Int(MEDLEY_ABI_MAJOR)
    /// ABI minor version this host was built with.
    public static let minor = Int(MEDLEY_ABI_MINOR)
    /// Opset version this host drives.
    public static let opsetVersion = Int(MEDLEY_OPSET_VERSION)
    /// The exported symbol every adapter must provide.
    public static let entrySymbol = MEDLEY_ADAPTER_ENTRY_SYMBOL
    /// Largest tensor rank an op descriptor carries.
    public static let maxRank = Int(MEDLEY_MAX_RANK)

    /// One entry of the adapter table.
    public struct Entry: Sendable, Hashable {
        /// Field name in `medley_adapter_api`, e.g. `op_launch`.
        public let name: String
        /// Byte offset of the function pointer within the table.
        public let offset: Int
        /// Whether ABI v1 requires the entry.
        public let isRequired: Bool
        /// ABI minor version that introduced the entry.
        public let sinceMinor: Int
    }

    /// One op of the opset with its argument counts.
    public struct Op: Sendable, Hashable {
        /// Op name as passed to `op_launch`, e.g. `matmul_forward`.
        public let name: String
        /// Fewest and most inputs the op takes.
        public let inputs: ClosedRange<Int>
        /// Fewest and most outputs the op takes.
        public let outputs: ClosedRange<Int>
    }

    /// The table's entries in order.
    public static let entries: [Entry] = {
        var count = 0
        guard let table = CMedleyAdapter_entries(&count) else { return [] }
        return (0..<count).map { i in
            let e = table[i]
            return Entry(
                name: String(cString: e.name), offset: e.offset,
                isRequired: e.required != 0, sinceMinor: Int(e.since_minor))
        }
    }()

    /// Opset v1 in order.
    public static let opset: [Op] = {
        var count = 0
        guard let table = CMedleyAdapter_opset(&count) else { return [] }
        return (0..<count).map { i in
            let o = table[i]
            return Op(
                name: String(cString: o.name),
                inputs: Int(o.inputs_min)...Int(o.inputs_max),
                outputs: Int(o.outputs_min)...Int(o.outputs_max))
        }
    }()

    /// Size of the table this host was built with.
    public static let tableSize = CMedleyAdapter_api_size()

    /// Bytes of the table before the first entry (`struct_size` and the version words).
    public static let tableHeaderSize = entries.first?.offset ?? tableSize

    /// The entry list as a Markdown table; `docs/adapters.md` embeds exactly this text.
    public static func entriesMarkdown() -> String {
        var lines = [
            "| entry | required | since ABI |",
            "| --- | --- | --- |",
        ]
        for entry in entries {
            lines.append(
                "| `\(entry.name)` | \(entry.isRequired ? "required" : "optional") | 1.\(entry.sinceMinor) |")
        }
        return lines.joined(separator: "\n")
    }
}
