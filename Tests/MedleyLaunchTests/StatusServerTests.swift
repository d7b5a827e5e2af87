import Foundation
import MedleyControl
import MedleyCore
import MedleySupervisor
import Testing

@testable import MedleyLaunch

/// `/metrics`, `/status.json` and `/` over real sockets, from a scripted supervisor.
@Suite("status server: real sockets", .serialized)
struct StatusServerTests {
    /// A supervisor of 3 ranks, 2 said hello, 5 steps recorded, one alert.
    static func supervisor() -> Supervisor {
        var s = Supervisor(configuration: SupervisorConfiguration(ranks: 3, heartbeatTimeout: 5), startedAt: 0)
        for r in 0..<2 {
            _ = s.handle(.hello(ControlHello(rank: r, adapter: "sim", vendor: "Acme", chip: "acme-x\(r)", host: "node\(r)",
                                             pid: 100 + Int32(r), memoryBytes: 1 << 30), at: 1))
        }
        _ = s.handle(.faultReport(ControlFaultReport(rank: 2, step: 0, kind: .other, message: "cannot open device"), at: 1.5))
        _ = s.handle(.droppedFrame(reason: "wrong token", peer: "127.0.0.1", at: 1.6))
        return s
    }

    /// GET (or another method) over a raw socket; the status line, headers and body.
    static func request(_ port: Int, _ path: String, method: String = "GET", raw: [UInt8]? = nil) throws -> (status: Int, head: String, body: String) {
        let client = try ControlServerTests.RawClient(port: port)
        defer { client.close() }
        client.send(raw ?? Array("\(method) \(path) HTTP/1.1\r\nHost: localhost\r\n\r\n".utf8))
        var bytes: [UInt8] = []
        while true {
            let chunk = client.receive()
            if chunk.isEmpty { break }
            bytes += chunk
        }
        let text = String(decoding: bytes, as: UTF8.self)
        let parts = text.components(separatedBy: "\r\n\r\n")
        let head = parts.first ?? ""
        let status = head.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
        return (status, head, parts.dropFirst().joined(separator: "\r\n\r\n"))
    }

    /// Parses Prometheus text: `# HELP`, `# TYPE`, and `name{labels} value` lines; fails on anything else.
    static func parse(_ text: String) -> [(name: String, labels: [String: String], value: Double)]? {
        var samples: [(String, [String: String], Double)] = []
        for line in text.split(separator: "\n") {
            if line.hasPrefix("# HELP ") || line.hasPrefix("# TYPE ") { continue }
            guard let space = line.lastIndex(of: " ") else { return nil }
            let series = line[..<space]
            let valueText = line[line.index(after: space)...]
            guard let value = valueText == "NaN" ? Double.nan : Double(valueText) else { return nil }
            var labels: [String: String] = [:]
            var name = String(series)
            if let open = series.firstIndex(of: "{") {
                guard series.last == "}" else { return nil }
                name = String(series[..<open])
                let inner = series[series.index(after: open)..<series.index(before: series.endIndex)]
                for pair in inner.split(separator: ",") {
                    let kv = pair.split(separator: "=", maxSplits: 1)
                    guard kv.count == 2, kv[1].hasPrefix("\""), kv[1].hasSuffix("\"") else { return nil }
                    labels[String(kv[0])] = String(kv[1].dropFirst().dropLast())
                }
            }
            guard name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }), !name.isEmpty else { return nil }
            samples.append((name, labels, value))
        }
        return samples
    }

    @Test("/metrics is Prometheus text with every documented metric, per rank for every rank; /status.json and / too")
    func routes() throws {
        var s = Self.supervisor()
        _ = s.handle(.hello(ControlHello(rank: 2, adapter: "cpu", vendor: "AMD", chip: "cpu-openblas", host: "node2", pid: 102,
                                         memoryBytes: 1 << 32), at: 2))
        for step in 1...5 {
            for r in 0..<3 {
                _ = s.handle(.stepReport(ControlStepReport(rank: r, step: step, loss: 3 - Double(step) / 10, tokensPerSecond: 900,
                                                           stepMs: 50, computeMs: 40, idleMs: 5, exchangeMs: 5, share: 2), at: 2 + Double(step)))
            }
        }
        let fixed = s
        let server = try StatusServer(port: 0) { StatusSnapshot(supervisor: fixed, job: "demo", totalSteps: 10, at: 8) }
        defer { server.shutdown() }

        let metrics = try Self.request(server.port, "/metrics")
        #expect(metrics.status == 200)
        #expect(metrics.head.contains("text/plain; version=0.0.4"))
        let parsed: [(name: String, labels: [String: String], value: Double)]? = Self.parse(metrics.body)
        let samples = try #require(parsed, "not Prometheus text:\n\(metrics.body)")
        func value(_ name: String, _ label: String = "", _ wanted: String = "") -> Double? {
            samples.first { $0.name == name && (label.isEmpty || $0.labels[label] == wanted) }?.value
        }
        for metric in StatusMetrics.all {
            let found = samples.filter { $0.name == metric.name }
            #expect(!found.isEmpty, "\(metric.name) missing")
            if metric.perRank {
                let ranks: Set<String> = Set(found.compactMap { $0.labels["rank"] })
                #expect(ranks == ["0", "1", "2"], "\(metric.name)")
            }
            let type = metric.isCounter ? "counter" : "gauge"
            #expect(metrics.body.contains("# TYPE \(metric.name) \(type)"), "\(metric.name)")
        }
        #expect(value("medley_step") == 5)
        #expect(value("medley_rank_step_seconds", "rank", "1") == 0.05)
        #expect(value("medley_rank_faults_total", "rank", "2") == 1)
        #expect(value("medley_control_frames_dropped_total", "reason", "wrong token") == 1)
        #expect(value("medley_rank_up", "chip", "acme-x0") == 1)

        let json = try Self.request(server.port, "/status.json")
        #expect(json.status == 200 && json.head.contains("application/json"))
        let snapshot = try JSONDecoder().decode(StatusSnapshot.self, from: Data(json.body.utf8))
        #expect(snapshot.ranks.map(\.chip) == ["acme-x0", "acme-x1", "cpu-openblas"])
        #expect(snapshot.steps.map(\.step) == [1, 2, 3, 4, 5])
        #expect(snapshot.alerts.first?.kind == .fault)
        #expect(snapshot.step == 5 && snapshot.totalSteps == 10 && snapshot.etaSeconds == 5)

        let page = try Self.request(server.port, "/")
        #expect(page.status == 200 && page.head.contains("text/html"))
        #expect(page.body.contains("<script>") && page.body.contains("status.json"))

        #expect(try Self.request(server.port, "/nope").status == 404)
        #expect(try Self.request(server.port, "/metrics", method: "POST").status == 405)
        let head = try Self.request(server.port, "/metrics", method: "HEAD")
        #expect(head.status == 200 && head.body.isEmpty)
    }

    @Test("garbage and an oversized request head are refused; the server goes on")
    func badRequests() throws {
        let fixed = Self.supervisor()
        let server = try StatusServer(port: 0) { StatusSnapshot(supervisor: fixed, job: "demo", totalSteps: 10, at: 2) }
        defer { server.shutdown() }
        let garbage = try Self.request(server.port, "", raw: [0, 1, 2, 255, 13, 10, 13, 10])
        #expect(garbage.status == 400 || garbage.status == 0)
        let huge = try Self.request(server.port, "/" + String(repeating: "a", count: 20_000))
        #expect(huge.status == 400 || huge.status == 431 || huge.status == 0, "\(huge.head)")
        #expect(try Self.request(server.port, "/metrics").status == 200)
    }

    @Test("a port that is taken is one line naming --metrics-port")
    func portInUse() throws {
        let fixed = Self.supervisor()
        let first = try StatusServer(port: 0) { StatusSnapshot(supervisor: fixed, job: "demo", totalSteps: 1, at: 1) }
        defer { first.shutdown() }
        do {
            let second = try StatusServer(port: first.port) { StatusSnapshot(supervisor: fixed, job: "demo", totalSteps: 1, at: 1) }
            second.shutdown()
            Issue.record("a taken port was accepted")
        } catch let error as MedleyError {
            #expect(error.message.contains("--metrics-port") && !error.message.contains("\n"), "\(error.message)")
        }
    }
}
