import MedleyCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Where adapters are looked for by name.
///
/// In order: every directory of `MEDLEY_ADAPTER_PATH` (colon-separated), then
/// the directory of the running executable (where `swift build` puts the
/// adapter products next to `medley`), then `../lib` beside it (an installed
/// layout).
public struct AdapterSearchPath: Sendable, Hashable {
    /// Directories searched, in order.
    public var directories: [String]

    /// Creates a search path over explicit directories.
    public init(directories: [String]) {
        self.directories = directories
    }

    /// `MEDLEY_ADAPTER_PATH`, then the executable's directory and `../lib`.
    public static var `default`: AdapterSearchPath {
        var directories: [String] = []
        if let value = getenv("MEDLEY_ADAPTER_PATH") {
            directories += String(cString: value).split(separator: ":").map(String.init).filter { !$0.isEmpty }
        }
        if let exe = executableDirectory() {
            directories.append(exe)
            directories.append(exe + "/../lib")
        }
        return AdapterSearchPath(directories: directories)
    }

    /// File name of the library for adapter `name`.
    public static func fileName(for name: String) -> String {
        #if os(macOS)
        "libmedley-adapter-\(name).dylib"
        #else
        "libmedley-adapter-\(name).so"
        #endif
    }

    /// Whether `value` names a file rather than an adapter.
    public static func isPath(_ value: String) -> Bool {
        value.contains("/") || value.hasSuffix(".so") || value.hasSuffix(".dylib")
    }

    /// Resolves a name or a path to the library file to load.
    ///
    /// A name is found by its file name first (`libmedley-adapter-<name>.so` in each directory in
    /// order), then by the `plugin_info` name the libraries on the path report; two libraries
    /// reporting the name (and no file of that name) are an error naming both.
    public func resolve(_ nameOrPath: String) throws -> String {
        if Self.isPath(nameOrPath) {
            guard access(nameOrPath, F_OK) == 0 else {
                throw MedleyError(.notFound, "adapter file \(nameOrPath) does not exist")
            }
            return nameOrPath
        }
        guard !nameOrPath.isEmpty,
            nameOrPath.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" })
        else {
            throw MedleyError(
                .invalidArgument,
                "'\(nameOrPath)' is not an adapter name (letters, digits, '-' and '_' only) nor a path")
        }
        let file = Self.fileName(for: nameOrPath)
        for directory in directories {
            let candidate = directory + "/" + file
            if access(candidate, F_OK) == 0 { return candidate }
        }
        // No file of that name: an adapter whose plugin_info name it is (a library named
        // differently from its chip), loading every candidate on the path.
        let matches = pluginNameMatches(nameOrPath)
        if matches.count == 1 { return matches[0] }
        if matches.count > 1 {
            throw MedleyError(
                .invalidArgument,
                "adapter '\(nameOrPath)' is ambiguous: no \(file), and \(matches.count) libraries report the plugin name "
                    + "'\(nameOrPath)': \(matches.joined(separator: ", ")); pass the path of the one you mean")
        }
        let places = directories.isEmpty ? "(no directories)" : directories.joined(separator: ", ")
        throw MedleyError(
            .notFound,
            "adapter '\(nameOrPath)' not found: no \(file) in \(places), and no adapter there reports that plugin name; "
                + "set MEDLEY_ADAPTER_PATH or pass the library's path")
    }

    /// The libraries on the path (``discover()``) whose `plugin_info` name is `name`, by path;
    /// ones that do not load are passed over.
    public func pluginNameMatches(_ name: String) -> [String] {
        discover().compactMap { found in
            guard let library = try? AdapterLibrary(path: found.path), library.info.name == name else { return nil }
            return found.path
        }
    }

    /// Every adapter library found, by name, first match winning.
    public func discover() -> [(name: String, path: String)] {
        var seen = Set<String>()
        var found: [(name: String, path: String)] = []
        let prefix = "libmedley-adapter-"
        let suffix = Self.fileName(for: "").dropFirst(prefix.count)
        for directory in directories {
            guard let dir = opendir(directory) else { continue }
            var names: [String] = []
            while let entry = readdir(dir) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                    String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
                }
                names.append(name)
            }
            closedir(dir)
            for file in names.sorted() where file.hasPrefix(prefix) && file.hasSuffix(suffix) {
                let name = String(file.dropFirst(prefix.count).dropLast(suffix.count))
                guard !name.isEmpty, !seen.contains(name) else { continue }
                seen.insert(name)
                found.append((name, directory + "/" + file))
            }
        }
        return found
    }

    /// Directory of the running executable, from /proc/self/exe.
    static func executableDirectory() -> String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard count > 0 else { return nil }
        let path = String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard let slash = path.lastIndex(of: "/") else { return nil }
        return String(path[..<slash])
    }
}
