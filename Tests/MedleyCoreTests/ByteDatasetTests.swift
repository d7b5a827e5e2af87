import Foundation
import MedleyCore
import Testing

/// A fresh temporary directory for one test.
func makeTemporaryDirectory() throws -> String {
    let path = NSTemporaryDirectory() + "/medley-core-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// Writes `text` to `path`, creating folders on the way.
func write(_ text: String, to path: String) throws {
    let folder = (path as NSString).deletingLastPathComponent
    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    try Data(text.utf8).write(to: URL(fileURLWithPath: path))
}

/// Expects `body` to throw a `MedleyError` with `code` whose message contains every fragment.
func expectMedleyError(
    _ code: MedleyError.Code, _ fragments: String..., sourceLocation: SourceLocation = #_sourceLocation,
    _ body: () throws -> Void
) {
    do {
        try body()
        Issue.record("expected a \(code) error containing \(fragments)", sourceLocation: sourceLocation)
    } catch let error as MedleyError {
        #expect(error.code == code, "\(error)", sourceLocation: sourceLocation)
        for fragment in fragments {
            #expect(error.message.contains(fragment), "'\(error.message)' lacks '\(fragment)'", sourceLocation: sourceLocation)
        }
        #expect(!error.message.contains("\n"), "not one line: \(error.message)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected a MedleyError, got \(error)", sourceLocation: sourceLocation)
    }
}

@Suite struct ByteDatasetTests {
    @Test func loadsOneFile() throws {
        let dir = try makeTemporaryDirectory()
        try write("hello world", to: dir + "/one.txt")
        let data = try ByteDataset(path: dir + "/one.txt")
        #expect(data.bytes == Array("hello world".utf8))
        #expect(data.files == [dir + "/one.txt"])
        #expect(data.path == dir + "/one.txt")
    }

    @Test func directoryIsReadSortedRecursivelySkippingCompanionsLinksAndBinaries() throws {
        let dir = try makeTemporaryDirectory()
        try write("bravo", to: dir + "/b")
        try write("alpha", to: dir + "/a")
        try write("INDEX", to: dir + "/a.dat")
        try FileManager.default.createSymbolicLink(atPath: dir + "/a.u8", withDestinationPath: "a")
        try FileManager.default.createSymbolicLink(atPath: dir + "/z-link-to-b", withDestinationPath: dir + "/b")
        try write("charlie", to: dir + "/sub/c")
        try write("secret", to: dir + "/.hidden")
        try write("", to: dir + "/empty")
        try Data([0x41, 0x00, 0x42]).write(to: URL(fileURLWithPath: dir + "/binary"))

        let data = try ByteDataset(path: dir)
        #expect(data.files == [dir + "/a", dir + "/b", dir + "/sub/c"])
        #expect(String(decoding: data.bytes, as: UTF8.self) == "alpha\nbravo\ncharlie")
        #expect(try ByteDataset(path: dir) == data)
    }

    @Test func aLinkToAFileOutsideTheCorpusIsRead() throws {
        let outside = try makeTemporaryDirectory()
        try write("elsewhere", to: outside + "/text")
        let dir = try makeTemporaryDirectory()
        try write("here", to: dir + "/a")
        try FileManager.default.createSymbolicLink(atPath: dir + "/b", withDestinationPath: outside + "/text")
        let data = try ByteDataset(path: dir)
        #expect(String(decoding: data.bytes, as: UTF8.self) == "here\nelsewhere")
    }

    @Test func missingPathIsNotFound() {
        expectMedleyError(.notFound, "/no/such/corpus", "data.path") {
            _ = try ByteDataset(path: "/no/such/corpus")
        }
        expectMedleyError(.notFound, "data.path") { _ = try ByteDataset(path: "") }
    }

    @Test func emptyCorpusIsAnError() throws {
        let dir = try makeTemporaryDirectory()
        expectMedleyError(.invalidArgument, dir, "no text") { _ = try ByteDataset(path: dir) }
        try write("", to: dir + "/empty")
        try write("x", to: dir + "/only.dat")
        expectMedleyError(.invalidArgument, dir, "1 empty file", "0 bytes") { _ = try ByteDataset(path: dir) }
        expectMedleyError(.invalidArgument, dir + "/empty", "no text") { _ = try ByteDataset(path: dir + "/empty") }
        expectMedleyError(.invalidArgument, "empty") { _ = try ByteDataset(bytes: [], name: "generated") }
    }

    @Test(.enabled(if: FileManager.default.fileExists(atPath: ByteDataset.defaultPath)))
    func fortunesCorpusLoadsPlainFilesOnly() throws {
        let data = try ByteDataset()
        #expect(!data.files.isEmpty)
        #expect(data.files == data.files.sorted())
        #expect(data.files.allSatisfy { !$0.hasSuffix(".dat") && !$0.hasSuffix(".u8") })
        #expect(data.count > 1_000_000)
        let split = try TrainValidationSplit(dataset: data, sequenceLength: 64)
        #expect(split.trainExampleCount > 10_000)
        #expect(split.validationExampleCount > 1_000)
    }
}
