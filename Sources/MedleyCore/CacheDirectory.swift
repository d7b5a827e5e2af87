import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Where Medley keeps what it measures or checks on this host (profiles, check records, sim costs).
public enum CacheDirectory {
    /// Medley's cache directory on this host: `$MEDLEY_CACHE_DIR` when set, else
    /// `$XDG_CACHE_HOME/medley`, else `~/.cache/medley`.
    public static func root(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let root = environment["MEDLEY_CACHE_DIR"], !root.isEmpty { return root }
        if let xdg = environment["XDG_CACHE_HOME"], !xdg.isEmpty { return xdg + "/medley" }
        let home = environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSHomeDirectory()
        return home + "/.cache/medley"
    }

    /// Writes `data` to `path` through a temporary file in the same directory and a rename, so a
    /// reader sees the old file or the new one, never a part.
    public static func writeAtomically(_ data: Data, to path: String) throws {
        let temporary = path + ".tmp-\(getpid())-\(UUID().uuidString.prefix(8))"
        guard FileManager.default.createFile(atPath: temporary, contents: data) else {
            throw MedleyError(.io, "cannot write \(temporary): check that the directory exists and is writable")
        }
        guard rename(temporary, path) == 0 else {
            let reason = String(cString: strerror(errno))
            try? FileManager.default.removeItem(atPath: temporary)
            throw MedleyError(.io, "cannot move \(temporary) to \(path): \(reason)")
        }
    }
}
