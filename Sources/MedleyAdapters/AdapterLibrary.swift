import CMedleyAdapter
import MedleyCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A loaded adapter library whose table passed the host's checks.
///
/// Loading checks everything that can be checked without running the chip:
/// that the file exists and loads, exports the entry symbol, returns a table
/// whose ABI major matches the host's, whose opset is one the host knows (not
/// newer), whose `struct_size` covers the header, and that every required
/// entry is present. All problems found are reported
/// together in one error.
///
/// Libraries are never unloaded: an adapter may own threads (BLAS pools,
/// driver threads) that must not outlive its code.
public final class AdapterLibrary: @unchecked Sendable {
    // @unchecked: every stored property is immutable after init; the table is
    // a constant the adapter owns for the life of the process.

    /// Path the library was loaded from.
    public let path: String
    /// What the library says it is.
    public let info: PluginInfo
    /// ABI major of the table.
    public let abiMajor: Int
    /// ABI minor of the table.
    public let abiMinor: Int
    /// Opset version the adapter implements.
    public let opsetVersion: Int
    /// `struct_size` the adapter reported.
    public let tableSize: Int
    /// Optional entries the adapter provides.
    public let optionalEntriesPresent: [String]
    /// Optional entries the adapter leaves out (the host copes without them).
    public let optionalEntriesAbsent: [String]

    let api: UnsafePointer<medley_adapter_api>

    /// What a plugin says about itself.
    public struct PluginInfo: Sendable, Hashable {
        /// Short adapter name, e.g. `reference`.
        public var name: String
        /// Who makes the chip.
        public var vendor: String
        /// The adapter's own version.
        public var version: String
    }

    /// Loads an adapter by name (searched on `searchPath`) or by file path.
    ///
    /// A value containing `/` or ending in `.so`/`.dylib` is a path; anything
    /// else is a name, resolved to `libmedley-adapter-<name>.so` or else to the one library on
    /// the search path whose `plugin_info` name it is (``AdapterSearchPath/resolve(_:)``).
    public static func load(_ nameOrPath: String, searchPath: AdapterSearchPath = .default) throws -> AdapterLibrary {
        let path = try searchPath.resolve(nameOrPath)
        return try AdapterLibrary(path: path)
    }

    /// Loads the adapter at `path` and checks its table.
    public init(path: String) throws {
        guard access(path, F_OK) == 0 else {
            throw MedleyError(.notFound, "adapter file \(path) does not exist")
        }
        guard let handle = dlopen(path, RTLD_NOW | RTLD_LOCAL) else {
            let reason = dlerror().map { String(cString: $0) } ?? "unknown reason"
            throw MedleyError(.adapterLoad, "cannot load adapter \(path): \(reason)")
        }
        guard let symbol = dlsym(handle, AdapterABI.entrySymbol) else {
            throw MedleyError(
                .adapterLoad,
                "\(path) is not a Medley adapter: it does not export \(AdapterABI.entrySymbol) "
                    + "(see adapters/include/medley_adapter.h)")
        }
        guard let api = CMedleyAdapter_call_entry(symbol) else {
            throw MedleyError(.adapterLoad, "adapter \(path): \(AdapterABI.entrySymbol)() returned NULL")
        }
        let table = api.pointee
        var problems: [String] = []
        if Int(table.abi_major) != AdapterABI.major {
            problems.append("ABI major \(table.abi_major), but this host speaks ABI major \(AdapterABI.major)")
        }
        if table.struct_size < AdapterABI.tableHeaderSize {
            problems.append(
                "table struct_size \(table.struct_size) is smaller than its \(AdapterABI.tableHeaderSize)-byte header")
        }
        if table.opset_version < 1 {
            problems.append("opset version \(table.opset_version) (this host drives opset \(AdapterABI.opsetVersion))")
        } else if Int(table.opset_version) > AdapterABI.opsetVersion {
            // A newer opset may change what an op means, so the host cannot drive it as if it were its own.
            // (A newer ABI minor is fine: it only appends entries, which this host never reads.)
            problems.append(
                "it declares opset \(table.opset_version), but the newest opset this Medley knows is "
                    + "\(AdapterABI.opsetVersion); rebuild the adapter against this Medley's "
                    + "adapters/include/medley_adapter.h (MEDLEY_OPSET_VERSION \(AdapterABI.opsetVersion)), "
                    + "or use a Medley that knows opset \(table.opset_version)")
        }
        var missingRequired: [String] = []
        var present: [String] = []
        var absent: [String] = []
        for entry in AdapterABI.entries {
            let inside = entry.offset + MemoryLayout<UnsafeRawPointer>.size <= table.struct_size
            let isSet = inside && CMedleyAdapter_entry_pointer(api, entry.offset) != nil
            if entry.isRequired {
                if !isSet { missingRequired.append(entry.name) }
            } else if isSet {
                present.append(entry.name)
            } else {
                absent.append(entry.name)
            }
        }
        if !missingRequired.isEmpty {
            problems.append("required entries missing: \(missingRequired.joined(separator: ", "))")
        }
        guard problems.isEmpty else {
            throw MedleyError(.adapterLoad, "adapter \(path) is not usable: \(problems.joined(separator: "; "))")
        }

        self.path = path
        self.api = api
        self.abiMajor = Int(table.abi_major)
        self.abiMinor = Int(table.abi_minor)
        self.opsetVersion = Int(table.opset_version)
        self.tableSize = table.struct_size
        self.optionalEntriesPresent = present
        self.optionalEntriesAbsent = absent

        var raw = medley_plugin_info()
        raw.struct_size = MemoryLayout<medley_plugin_info>.size
        let infoError = table.plugin_info!(&raw)
        if let infoError {
            let failure = Self.consume(infoError, api: api, context: "adapter \(path): plugin_info")
            throw failure
        }
        self.info = PluginInfo(
            name: raw.name.map { String(cString: $0) } ?? "",
            vendor: raw.vendor.map { String(cString: $0) } ?? "",
            version: raw.version.map { String(cString: $0) } ?? "")
    }

    /// Whether an optional entry is present.
    public func provides(_ entry: String) -> Bool {
        optionalEntriesPresent.contains(entry) || AdapterABI.entries.contains { $0.name == entry && $0.isRequired }
    }

    /// Number of devices the adapter can open.
    public func deviceCount() throws -> Int {
        var count: Int32 = 0
        try check(api.pointee.device_count!(&count), "device_count")
        guard count >= 0 else {
            throw MedleyError(.conformance, "adapter \(info.name): device_count returned \(count)")
        }
        return Int(count)
    }

    /// Opens device `index` with key/value options.
    public func openDevice(_ index: Int = 0, options: [(String, String)] = []) throws -> Device {
        try Device(library: self, index: index, options: options)
    }

    // MARK: Calling entries

    /// Turns a returned error object into a thrown `MedleyError`, releasing it.
    func check(_ error: UnsafeMutablePointer<medley_error>?, _ context: @autoclosure () -> String) throws {
        // Every adapter call ends here: the call returned, so the rank is not stuck in it.
        WorkProgress.mark()
        guard let error else { return }
        throw Self.consume(error, api: api, context: "adapter \(info.name): \(context())")
    }

    static func consume(
        _ error: UnsafeMutablePointer<medley_error>, api: UnsafePointer<medley_adapter_api>, context: String
    ) -> MedleyError {
        let status = AdapterStatus(rawValue: error.pointee.code)
        let message = error.pointee.message.map { String(cString: $0) } ?? "(no message)"
        api.pointee.error_free?(error)
        return MedleyError(status.medleyCode, "\(context): \(message)", cause: status)
    }
}

/// The code of an error object returned by an adapter.
public enum AdapterStatus: Error, Sendable, Hashable, CustomStringConvertible {
    case invalidArgument, outOfMemory, unsupported, deviceLost, internalError, unavailable
    /// A code this host does not know (treated as internal).
    case unknown(Int32)

    init(rawValue: Int32) {
        switch rawValue {
        case 1: self = .invalidArgument
        case 2: self = .outOfMemory
        case 3: self = .unsupported
        case 4: self = .deviceLost
        case 5: self = .internalError
        case 6: self = .unavailable
        default: self = .unknown(rawValue)
        }
    }

    /// The `MedleyError` code a failure with this status is reported as.
    public var medleyCode: MedleyError.Code {
        switch self {
        case .invalidArgument: .invalidArgument
        case .outOfMemory: .outOfMemory
        case .unsupported: .unsupported
        case .deviceLost: .deviceLost
        case .internalError, .unavailable, .unknown: .adapterCall
        }
    }

    public var description: String {
        switch self {
        case .invalidArgument: "INVALID_ARGUMENT"
        case .outOfMemory: "OUT_OF_MEMORY"
        case .unsupported: "UNSUPPORTED"
        case .deviceLost: "DEVICE_LOST"
        case .internalError: "INTERNAL"
        case .unavailable: "UNAVAILABLE"
        case .unknown(let code): "code \(code)"
        }
    }
}

extension MedleyError {
    /// The adapter status behind this error, when an adapter call raised it.
    public var adapterStatus: AdapterStatus? { cause as? AdapterStatus }
}
