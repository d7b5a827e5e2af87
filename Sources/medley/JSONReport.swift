import Foundation
import MedleyCore

/// The `--json FILE` output the commands share: pretty, sorted keys, a final newline, written
/// atomically (a reader sees the old file or the new one, never half of one).
enum JSONReport {
    static func write<T: Encodable>(_ value: T, to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        do {
            try (encoder.encode(value) + Data("\n".utf8)).write(to: URL(fileURLWithPath: path), options: .atomic)
        } catch {
            throw MedleyError(.io, "cannot write \(path): \(error.localizedDescription)")
        }
    }
}
