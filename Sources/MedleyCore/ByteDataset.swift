import Foundation

/// A text corpus held as one array of bytes: the training data of a byte-level GPT
/// (vocabulary 256, token = byte).
///
/// A corpus is a single file or a directory. A directory is walked recursively and
/// its files are read in sorted path order, so every rank that loads the same path
/// holds the same bytes. Files are joined by ``documentSeparator``.
///
/// In a directory these are skipped:
/// - hidden entries (a name starting with `.`);
/// - the index companions of Debian's `fortunes` corpus: names ending in `.dat` or `.u8`;
/// - symbolic links whose target is a file already in the corpus (no file is read twice);
/// - anything that is not a regular file, and files whose first 8 KiB hold a NUL byte (not text);
/// - empty files.
public struct ByteDataset: Sendable, Equatable {
    /// Where Debian's `fortunes` package installs its text: the default corpus.
    public static let defaultPath = "/usr/share/games/fortunes"
    /// The byte placed between two documents (files): a newline.
    public static let documentSeparator: UInt8 = 0x0A
    /// File name endings that are never read from a directory (fortunes' indexes and UTF-8 links).
    public static let skippedExtensions: Set<String> = ["dat", "u8"]

    /// The path the corpus was loaded from (or a name for an in-memory corpus).
    public let path: String
    /// Every byte of the corpus, documents joined by ``documentSeparator``.
    public let bytes: [UInt8]
    /// The files read, in the order they were joined (empty for an in-memory corpus).
    public let files: [String]

    /// Number of bytes in the corpus.
    public var count: Int { bytes.count }

    /// A corpus from bytes already in memory (tests, generated data).
    ///
    /// Throws `invalidArgument` when `bytes` is empty.
    public init(bytes: [UInt8], name: String = "<memory>") throws {
        guard !bytes.isEmpty else {
            throw MedleyError(.invalidArgument, "data \(name) is empty: a corpus needs at least one byte of text")
        }
        self.path = name
        self.bytes = bytes
        self.files = []
    }

    /// Loads the corpus at `path`: a text file, or a directory of text files.
    ///
    /// Throws `notFound` when nothing exists at `path`, `invalidArgument` when it holds no text,
    /// and `io` when a file cannot be read.
    public init(path: String = ByteDataset.defaultPath) throws {
        let files = try Self.corpusFiles(at: path)
        var bytes: [UInt8] = []
        var read: [String] = []
        for file in files {
            let data: Data
            do {
                data = try Data(contentsOf: URL(fileURLWithPath: file))
            } catch {
                throw MedleyError(.io, "cannot read data file \(file): \(error.localizedDescription)")
            }
            if data.isEmpty { continue }
            if !read.isEmpty { bytes.append(Self.documentSeparator) }
            bytes.append(contentsOf: data)
            read.append(file)
        }
        guard !bytes.isEmpty else {
            let what = files.isEmpty ? "no text files" : "\(files.count) empty file\(files.count == 1 ? "" : "s")"
            throw MedleyError(
                .invalidArgument,
                "data path \(path) holds no text (\(what), 0 bytes); point data.path at a text file or a directory of text files"
            )
        }
        self.path = path
        self.bytes = bytes
        self.files = read
    }

    /// The files a corpus at `path` is read from, in order: `[path]` for a file, the text files
    /// under a directory (recursively, sorted by path, skipping what the type's documentation lists).
    ///
    /// Throws `notFound` when nothing exists at `path`.
    public static func corpusFiles(at path: String) throws -> [String] {
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        guard !path.isEmpty, fm.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw MedleyError(
                .notFound,
                "data path '\(path)' does not exist; set data.path to a text file or a directory of text files (default \(defaultPath), from Debian's fortunes package)"
            )
        }
        guard isDirectory.boolValue else {
            // A device, pipe or socket (e.g. /dev/zero) is no corpus: reading one never ends or
            // fails with a misleading error, so say what it is.
            var info = stat()
            if stat(path, &info) == 0, info.st_mode & S_IFMT != S_IFREG {
                let kind: String
                switch info.st_mode & S_IFMT {
                case S_IFCHR: kind = "a character device"
                case S_IFBLK: kind = "a block device"
                case S_IFIFO: kind = "a pipe (FIFO)"
                case S_IFSOCK: kind = "a socket"
                default: kind = "not a regular file"
                }
                throw MedleyError(
                    .invalidArgument,
                    "data path '\(path)' is \(kind), not a text file; set data.path to a text file or a directory of text files")
            }
            return [path]
        }

        var candidates: [String] = []
        try collect(directory: path, into: &candidates, visited: [])
        candidates.sort()

        // Plain files first claim their real paths; a link to one of them is a duplicate.
        var chosen: [String] = []
        var realPaths: Set<String> = []
        var links: [(path: String, real: String)] = []
        for file in candidates {
            let real = URL(fileURLWithPath: file).resolvingSymlinksInPath().path
            if isSymbolicLink(file) {
                links.append((file, real))
            } else if realPaths.insert(real).inserted {
                chosen.append(file)
            }
        }
        for link in links where realPaths.insert(link.real).inserted {
            chosen.append(link.path)
        }
        return chosen.sorted().filter(looksLikeText)
    }

    /// Walks `directory`, appending the candidate files; `visited` guards against link cycles.
    private static func collect(directory: String, into files: inout [String], visited: Set<String>) throws {
        let fm = FileManager.default
        let real = URL(fileURLWithPath: directory).resolvingSymlinksInPath().path
        guard !visited.contains(real) else { return }
        let names: [String]
        do {
            names = try fm.contentsOfDirectory(atPath: directory)
        } catch {
            throw MedleyError(.io, "cannot list data directory \(directory): \(error.localizedDescription)")
        }
        for name in names.sorted() where !name.hasPrefix(".") {
            let full = (directory as NSString).appendingPathComponent(name)
            let ext = (name as NSString).pathExtension
            var isDirectory: ObjCBool = false
            guard fm.fileExists(atPath: full, isDirectory: &isDirectory) else { continue }  // dangling link
            if isDirectory.boolValue {
                try collect(directory: full, into: &files, visited: visited.union([real]))
            } else if !skippedExtensions.contains(ext), isRegularFile(full) {
                files.append(full)
            }
        }
    }

    /// Whether `path` is itself a symbolic link.
    private static func isSymbolicLink(_ path: String) -> Bool {
        let type = (try? FileManager.default.attributesOfItem(atPath: path))?[.type] as? FileAttributeType
        return type == .typeSymbolicLink
    }

    /// Whether `path` (after following links) is a regular file.
    private static func isRegularFile(_ path: String) -> Bool {
        let real = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
        let type = (try? FileManager.default.attributesOfItem(atPath: real))?[.type] as? FileAttributeType
        return type == .typeRegular
    }

    /// Whether the first 8 KiB of `path` are free of NUL bytes (a cheap test for text).
    private static func looksLikeText(_ path: String) -> Bool {
        guard let handle = FileHandle(forReadingAtPath: path) else { return true }  // reported when read
        defer { try? handle.close() }
        let head = (try? handle.read(upToCount: 8192)) ?? Data()
        return !head.contains(0)
    }
}
