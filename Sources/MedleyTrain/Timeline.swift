import Foundation
import MedleyComm
import MedleyCore

/// What every rank did and when, as a Chrome trace (JSON, viewable in Perfetto or
/// chrome://tracing): one lane per rank with its forward, backward, send, receive,
/// exchange and update spans.
///
/// Each rank times its spans against its own clock from ``start()`` (called right after a
/// barrier, so the lanes line up); at the end rank 0 gathers every rank's spans and writes
/// the file atomically.
struct Timeline {
    let rank: Int
    /// Spans are kept only when a timeline was asked for.
    var enabled = false
    var origin = 0.0
    /// One JSON object per span.
    var events: [String] = []
    /// Spans kept per rank at most (the first ones), so a long job's timeline stays a file a
    /// viewer opens (about 100 bytes each); the rest are counted in ``droppedSpans``.
    static let spanLimit = 200_000
    var droppedSpans = 0

    init(rank: Int) { self.rank = rank }

    /// Starts the clock (and recording, when `enabled`).
    mutating func start(enabled: Bool = true) {
        self.enabled = enabled
        origin = MPIRuntime.wallTime()
    }

    /// Records a span from `from` to `to` (wall seconds).
    mutating func span(_ name: String, category: String, from: Double, to: Double) {
        guard enabled else { return }
        guard events.count < Self.spanLimit else {
            droppedSpans += 1
            return
        }
        let ts = (from - origin) * 1e6, dur = max(0, to - from) * 1e6
        events.append(
            String(format: "{\"name\":\"%@\",\"cat\":\"%@\",\"ph\":\"X\",\"pid\":0,\"tid\":%d,\"ts\":%.1f,\"dur\":%.1f}",
                   name, category, rank, ts, dur))
    }

    /// Gathers every rank's spans (collective) and, on rank 0, writes the trace to `path`.
    func write(to path: String, world: Communicator, labels: [String]) throws {
        let mine = Array(events.joined(separator: ",\n").utf8).map { Int8(bitPattern: $0) }
        let all = try world.allgatherv(mine)
        guard world.rank == 0 else { return }
        var parts: [String] = []
        for (r, label) in labels.enumerated() {
            let escaped = label.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            parts.append("{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":0,\"tid\":\(r),\"args\":{\"name\":\"\(escaped)\"}}")
        }
        for bytes in all where !bytes.isEmpty {
            parts.append(String(decoding: bytes.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        let text = "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n" + parts.joined(separator: ",\n") + "\n]}\n"
        let url = URL(fileURLWithPath: path)
        do {
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try Data(text.utf8).write(to: url, options: .atomic)
        } catch {
            throw MedleyError(.io, "cannot write the timeline \(path): \(error.localizedDescription); pick a writable --timeline path")
        }
    }
}
