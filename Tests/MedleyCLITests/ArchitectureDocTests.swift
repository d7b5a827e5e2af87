import Foundation
import MedleyTestSupport
import Testing

/// docs/architecture.md's module graph is what the sources import: every Swift target under
/// Sources/ and the Medley modules its files import (the rule of scripts/module-graph.sh).
@Suite("docs/architecture.md's module graph matches the imports")
struct ArchitectureDocTests {
    /// The Medley modules and C targets an import line may name.
    static func isMedleyModule(_ name: String) -> Bool {
        name.hasPrefix("Medley") || ["CMPI", "CMedleyProto", "CMedleyAdapter", "COpenBLAS"].contains(name)
    }

    /// "Target -> A B C" for every Swift target, from its sources' import lines.
    static func graphFromSources() throws -> Set<String> {
        let sources = TestSupport.repositoryRoot + "/Sources"
        var lines: Set<String> = []
        for directory in try FileManager.default.contentsOfDirectory(atPath: sources).sorted() {
            let module = directory == "medley-comm-check" ? "MedleyCommCheck" : directory
            guard let files = FileManager.default.enumerator(atPath: sources + "/" + directory)?.allObjects as? [String] else { continue }
            let swiftFiles = files.filter { $0.hasSuffix(".swift") }
            if swiftFiles.isEmpty { continue }
            var imports: Set<String> = []
            for file in swiftFiles {
                let text = try String(contentsOfFile: sources + "/" + directory + "/" + file, encoding: .utf8)
                for line in text.split(separator: "\n") {
                    let words = line.split(separator: " ").map(String.init)
                    guard let at = words.firstIndex(of: "import"), at + 1 < words.count,
                          words[..<at].allSatisfy({ $0.hasPrefix("@") })
                    else { continue }
                    if Self.isMedleyModule(words[at + 1]) { imports.insert(words[at + 1]) }
                }
            }
            lines.insert("\(module) -> " + (imports.isEmpty ? "(none)" : imports.sorted().joined(separator: " ")))
        }
        return lines
    }

    @Test("every arrow in the doc is an import, and every import is an arrow")
    func graphIsCurrent() throws {
        let doc = try String(contentsOfFile: TestSupport.repositoryRoot + "/docs/architecture.md", encoding: .utf8)
        let block = try #require(
            doc.components(separatedBy: "<!-- module-graph: begin -->").dropFirst().first?
                .components(separatedBy: "<!-- module-graph: end -->").first)
        let documented = Set(block.split(separator: "\n").map(String.init).filter { $0.contains(" -> ") })
        let actual = try Self.graphFromSources()
        #expect(documented == actual, """
            docs/architecture.md's module graph is stale; replace it with (bash scripts/module-graph.sh):
            \(actual.sorted().joined(separator: "\n"))
            """)
    }

    @Test("the graph's rules hold: no product library imports OpenBLAS or the benchmarks, Comm no planner")
    func layering() throws {
        let graph = Dictionary(uniqueKeysWithValues: try Self.graphFromSources().map { line -> (String, Set<String>) in
            let parts = line.components(separatedBy: " -> ")
            return (parts[0], Set(parts[1].split(separator: " ").map(String.init)))
        })
        for (module, imports) in graph where !["MedleyBench", "medley", "MedleyCommCheck"].contains(module) {
            #expect(!imports.contains("COpenBLAS"), "\(module) imports COpenBLAS")
            #expect(!imports.contains("MedleyBench"), "\(module) imports MedleyBench")
        }
        #expect(graph["MedleyComm"]?.contains("MedleyPlanner") == false)
        #expect(graph["MedleyCore"] == ["(none)"])
    }
}
