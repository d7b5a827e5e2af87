import Foundation
import MedleyCore

/// The files a job writes (`--log`, `--save-weights`, `--timeline`), checked before anything
/// runs: a job that would train for hours and then fail to save its weights fails at once
/// instead, naming the path and the flag.
public enum OutputPaths {
    /// Checks that `path` (given by `flag`) can be written: it is not a directory, its folder
    /// exists or can be made, and a file can be created in that folder. Leaves nothing behind
    /// but folders it had to make.
    public static func checkWritable(_ path: String, flag: String) throws {
        let url = URL(fileURLWithPath: path)
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
            throw MedleyError(.io, "\(flag) \(path) is a directory; give a file path")
        }
        let folder = url.deletingLastPathComponent()
        var folderIsDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: folder.path, isDirectory: &folderIsDirectory), !folderIsDirectory.boolValue {
            throw MedleyError(.io, "\(flag) \(path): \(folder.path) is not a directory; pick a writable path")
        }
        do {
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        } catch {
            throw MedleyError(.io, "\(flag) \(path): cannot make its folder \(folder.path) (\(reason(error))); pick a writable path")
        }
        let probe = folder.appendingPathComponent(".medley-write-check-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        guard FileManager.default.createFile(atPath: probe.path, contents: nil) else {
            throw MedleyError(.io, "\(flag) \(path): cannot create files in \(folder.path) (\(String(cString: strerror(errno)))); pick a writable path")
        }
        try? FileManager.default.removeItem(at: probe)
        if FileManager.default.fileExists(atPath: path), !FileManager.default.isWritableFile(atPath: path) {
            throw MedleyError(.io, "\(flag) \(path) exists and cannot be written; pick a writable path")
        }
    }

    /// Creates (or truncates) the step log, making its folder.
    public static func openLog(_ path: String) throws -> FileHandle {
        try checkWritable(path, flag: "--log")
        guard FileManager.default.createFile(atPath: path, contents: nil),
              let handle = FileHandle(forWritingAtPath: path)
        else {
            throw MedleyError(.io, "--log \(path): cannot create the step log (\(String(cString: strerror(errno)))); pick a writable path")
        }
        return handle
    }

    /// An error's own words: a MedleyError's message, else Foundation's description.
    static func reason(_ error: Error) -> String {
        if let error = error as? MedleyError { return error.message }
        return (error as NSError).localizedFailureReason ?? error.localizedDescription
    }
}
