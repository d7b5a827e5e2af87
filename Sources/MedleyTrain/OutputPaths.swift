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

    /// Checks that `path` (given by `flag`) is a directory that exists or can be made, and that
    /// files can be created in it.
    public static func checkWritableDirectory(_ path: String, flag: String) throws {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue {
            throw MedleyError(.io, "\(flag) \(path) is a file; give a directory")
        }
        try checkWritable(path + "/.medley-directory-check", flag: flag)
    }

    /// Opens the step log of a resumed run for appending: the records after `step` (an
    /// interrupted run's steps past its checkpoint, trained again now) are dropped first, so
    /// each step is in the log once.
    public static func openLog(_ path: String, resumingAfter step: Int) throws -> FileHandle {
        try checkWritable(path, flag: "--log")
        let old = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        let kept = old.split(separator: "\n").filter { line in
            guard let data = line.data(using: .utf8),
                  let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                  let recorded = object["step"] as? Int
            else { return false }
            return recorded <= step
        }
        let text = kept.map { $0 + "\n" }.joined()
        do {
            try Data(text.utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
        } catch {
            throw MedleyError(.io, "--log \(path): cannot rewrite the step log (\(reason(error))); pick a writable path")
        }
        guard let handle = FileHandle(forWritingAtPath: path) else {
            throw MedleyError(.io, "--log \(path): cannot open the step log (\(String(cString: strerror(errno)))); pick a writable path")
        }
        handle.seekToEndOfFile()
        return handle
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
