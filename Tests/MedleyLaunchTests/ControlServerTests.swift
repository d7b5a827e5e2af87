import Foundation
import MedleyControl
import MedleyCore
import MedleySupervisor
import NIOConcurrencyHelpers
import Testing

@testable import MedleyLaunch

/// The supervisor's listener with real sockets: what it decodes, what it drops and counts,
/// what it sends back, and a port that is taken.
@Suite("control server: real sockets", .serialized)
struct ControlServerTests {
    /// Events the server handed over, in order.
    final class Events: @unchecked Sendable {
        private let box = NIOLockedValueBox<[SupervisorEvent]>([])
        func append(_ event: SupervisorEvent) { box.withLockedValue { $0.append(event) } }
        var all: [SupervisorEvent] { box.withLockedValue { $0 } }
        /// Waits (at most `seconds`) until `done` holds for the events.
        func wait(_ seconds: Double = 10, until done: ([SupervisorEvent]) -> Bool) -> Bool {
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline {
                if done(all) { return true }
                Thread.sleep(forTimeInterval: 0.01)
            }
            return done(all)
        }
    }

    /// A blocking TCP client on loopback.
    struct RawClient {
        let fd: Int32
        init(port: Int) throws {
            fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = in_port_t(UInt16(port).bigEndian)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            var timeout = timeval(tv_sec: 5, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            let result = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard result == 0 else { throw MedleyError(.io, "connect failed: \(errno)") }
        }
        func send(_ bytes: [UInt8]) { _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } }
        /// Reads what arrives within the socket's timeout (empty at EOF or timeout).
        func receive() -> [UInt8] {
            var buffer = [UInt8](repeating: 0, count: 65536)
            let n = recv(fd, &buffer, buffer.count, 0)
            return n > 0 ? Array(buffer[0..<n]) : []
        }
        func close() { Glibc.close(fd) }
    }

    static let token = ControlToken.random()
    static let hello = ControlHello(rank: 1, adapter: "sim", vendor: "Acme", chip: "acme-x1", host: "localhost", pid: 4242, memoryBytes: 1 << 30)

    @Test("messages with the job's token become events; wrong tokens, garbage and oversized frames are dropped and counted")
    func decodesAndDrops() throws {
        let events = Events()
        let server = try ControlServer(token: Self.token, clock: { 1 }, onEvent: { events.append($0) })
        defer { server.shutdown() }
        let client = try RawClient(port: server.port)
        defer { client.close() }
        client.send(ControlWire.encode(.hello(Self.hello), token: Self.token))
        client.send(ControlWire.encode(.heartbeat(ControlHeartbeat(rank: 1, step: 3)), token: Self.token))
        client.send(ControlWire.encode(.heartbeat(ControlHeartbeat(rank: 1, step: 4)), token: ControlToken.random()))
        client.send([0, 0, 0, 5, 0xFF, 0xFE, 0xFD, 0xFC, 0xFB])  // a frame that does not decode
        client.send(ControlWire.encode(.heartbeat(ControlHeartbeat(rank: 1, step: 5)), token: Self.token))
        #expect(events.wait { evs in evs.contains { if case .heartbeat(let b, _) = $0 { return b.step == 5 } else { return false } } })
        let drops = events.all.compactMap { event -> String? in if case .droppedFrame(let reason, _, _) = event { return reason } else { return nil } }
        #expect(drops.contains(ControlDropReason.wrongToken.rawValue), "\(drops)")
        #expect(drops.contains(ControlDropReason.undecodable.rawValue), "\(drops)")
        #expect(events.all.contains { if case .hello(let h, _) = $0 { return h == Self.hello } else { return false } })
        #expect(!events.all.contains { if case .heartbeat(let b, _) = $0 { return b.step == 4 } else { return false } })

        // An oversized length prefix closes that connection; the server goes on accepting.
        let hostile = try RawClient(port: server.port)
        hostile.send([0x7F, 0xFF, 0xFF, 0xFF] + [UInt8](repeating: 1, count: 64))
        #expect(hostile.receive().isEmpty)  // closed by the server
        hostile.close()
        #expect(events.wait { evs in evs.contains { if case .droppedFrame(let r, _, _) = $0 { return r == ControlDropReason.oversized.rawValue } else { return false } } })
        let next = try RawClient(port: server.port)
        next.send(ControlWire.encode(.heartbeat(ControlHeartbeat(rank: 1, step: 6)), token: Self.token))
        #expect(events.wait { evs in evs.contains { if case .heartbeat(let b, _) = $0 { return b.step == 6 } else { return false } } })
        next.close()
    }

    @Test("a connection from a host outside the job is dropped and counted before any frame is read")
    func hostsOutsideTheJob() throws {
        let events = Events()
        let server = try ControlServer(token: Self.token, allowedHosts: ["10.255.255.1"], clock: { 2 }, onEvent: { events.append($0) })
        defer { server.shutdown() }
        let client = try RawClient(port: server.port)
        defer { client.close() }
        client.send(ControlWire.encode(.hello(Self.hello), token: Self.token))
        #expect(client.receive().isEmpty)  // closed at once
        #expect(events.wait { evs in evs.contains { if case .droppedFrame(let r, let peer, _) = $0 { return r == "host outside the job" && peer == "127.0.0.1" } else { return false } } })
        #expect(!events.all.contains { if case .hello = $0 { return true } else { return false } })
        #expect(ControlServer.localAddresses().contains("127.0.0.1"))
    }

    @Test("a command reaches the rank that said hello on its connection")
    func commandsReachTheRank() throws {
        let events = Events()
        let server = try ControlServer(token: Self.token, clock: { 0 }, onEvent: { events.append($0) })
        defer { server.shutdown() }
        let client = try RawClient(port: server.port)
        defer { client.close() }
        #expect(!server.send(ControlCommand(kind: .stop, reason: "nobody yet"), to: 1))
        client.send(ControlWire.encode(.hello(Self.hello), token: Self.token))
        #expect(events.wait { !$0.isEmpty })
        #expect(server.connectedRanks == [1])
        let command = ControlCommand(kind: .checkpointNow, reason: "test")
        #expect(server.send(command, to: 1))
        var decoder = ControlFrameDecoder(token: Self.token)
        decoder.append(client.receive())
        #expect(decoder.next() == .message(.command(command)))
    }

    @Test("a port that is taken is one line naming --control-port")
    func portInUse() throws {
        let first = try ControlServer(token: Self.token, clock: { 0 }, onEvent: { _ in })
        defer { first.shutdown() }
        do {
            let second = try ControlServer(port: first.port, token: Self.token, clock: { 0 }, onEvent: { _ in })
            second.shutdown()
            Issue.record("a second listener on port \(first.port) was allowed")
        } catch let error as MedleyError {
            #expect(error.message.contains("--control-port"))
        }
    }
}
