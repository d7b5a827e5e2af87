import Foundation
import MedleyControl
import Testing
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A supervisor stand-in: a loopback TCP listener on a thread that decodes every frame it gets
/// and can send frames back to its latest connection. Plain sockets, no framework.
final class TestListener: @unchecked Sendable {
    let port: Int
    let token: [UInt8]
    private let listenFD: Int32
    private let lock = NSLock()
    private var messages: [ControlMessage] = []
    private var connections = 0
    private var clientFD: Int32 = -1
    private var closed = false
    private var threadDone = false

    /// Listens on 127.0.0.1:`port` (0: any free port).
    init?(token: [UInt8], port: Int = 0) {
        self.token = token
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let ok = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard ok == 0, listen(fd, 8) == 0 else { close(fd); return nil }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        listenFD = fd
        self.port = Int(UInt16(bigEndian: addr.sin_port))
        Thread { [self] in self.serve() }.start()
    }

    private func serve() {
        defer {
            lock.lock(); threadDone = true; lock.unlock()
        }
        while true {
            lock.lock(); let stop = closed; lock.unlock()
            if stop { return }
            var fds = [pollfd(fd: listenFD, events: Int16(POLLIN), revents: 0)]
            guard poll(&fds, 1, 50) > 0 else { continue }
            let c = accept(listenFD, nil, nil)
            if c < 0 { continue }
            lock.lock()
            connections += 1
            clientFD = c
            lock.unlock()
            var decoder = ControlFrameDecoder(token: token)
            var buf = [UInt8](repeating: 0, count: 4096)
            while true {
                lock.lock(); let stop = closed; lock.unlock()
                if stop { break }
                var cfds = [pollfd(fd: c, events: Int16(POLLIN), revents: 0)]
                guard poll(&cfds, 1, 50) > 0 else { continue }
                let n = recv(c, &buf, buf.count, 0)
                if n <= 0 { break }
                decoder.append(Array(buf[0..<n]))
                while let r = decoder.next() {
                    if case .message(let m) = r { lock.lock(); messages.append(m); lock.unlock() }
                }
            }
            lock.lock()
            if clientFD == c { clientFD = -1 }
            lock.unlock()
            close(c)
        }
    }

    var received: [ControlMessage] { lock.lock(); defer { lock.unlock() }; return messages }
    var currentFD: Int32 { lock.lock(); defer { lock.unlock() }; return clientFD }
    var connectionCount: Int { lock.lock(); defer { lock.unlock() }; return connections }

    /// Sends a message to the current connection; false if none.
    func send(_ m: ControlMessage, token: [UInt8]? = nil) -> Bool {
        lock.lock()
        let c = clientFD
        lock.unlock()
        guard c >= 0 else { return false }
        let bytes = ControlWire.encode(m, token: token ?? self.token)
        return bytes.withUnsafeBytes { Glibc.send(c, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } == bytes.count
    }

    /// Closes the listener and its connection, and waits (bounded) for its thread to end.
    func shutdown() {
        lock.lock(); closed = true; lock.unlock()
        let until = Date().addingTimeInterval(5)
        while Date() < until {
            lock.lock(); let d = threadDone; lock.unlock()
            if d { break }
            usleep(10_000)
        }
        close(listenFD)
    }
}

/// Polls `condition` until it holds or `timeout` seconds pass.
func eventually(_ timeout: Double = 5, _ condition: () -> Bool) -> Bool {
    let until = Date().addingTimeInterval(timeout)
    while Date() < until {
        if condition() { return true }
        usleep(20_000)
    }
    return condition()
}

func heartbeats(_ ms: [ControlMessage]) -> [ControlHeartbeat] {
    ms.compactMap { if case .heartbeat(let b) = $0 { b } else { nil } }
}

func hellos(_ ms: [ControlMessage]) -> [ControlHello] {
    ms.compactMap { if case .hello(let h) = $0 { h } else { nil } }
}

let clientHello = ControlHello(rank: 2, adapter: "sim", vendor: "Medley", chip: "sim-x", host: "localhost", pid: getpid(),
                               memoryBytes: 1 << 30)

/// A port with nothing listening (bound, then closed).
func freePort() -> Int {
    guard let l = TestListener(token: []) else { return 1 }
    let p = l.port
    l.shutdown()
    return p
}

@Suite("control client", .serialized)
struct ControlClientTests {
    @Test("hello, heartbeats while training sleeps, reports, and a command come through")
    func endToEnd() throws {
        let token = ControlToken.random()
        let listener = try #require(TestListener(token: token))
        defer { listener.shutdown() }
        let client = ControlClient(endpoint: ControlEndpoint(host: "127.0.0.1", port: listener.port, token: token),
                                   hello: clientHello, heartbeatSeconds: 0.2, retrySeconds: 0.2)
        client.start()
        defer { client.stop() }
        #expect(eventually { hellos(listener.received) == [clientHello] })
        #expect(eventually { client.isConnected })
        client.update(step: 7, loss: 2.5, tokensPerSecond: 100, deviceMemoryUsedBytes: 123, health: .ok)

        // The "training" thread is busy for 3 s; heartbeats keep coming without it.
        let before = heartbeats(listener.received).count
        let training = Thread { Thread.sleep(forTimeInterval: 3) }
        training.start()
        Thread.sleep(forTimeInterval: 3)
        let during = heartbeats(listener.received).count - before
        #expect(during >= 2, "only \(during) heartbeats in 3 s")
        #expect(eventually {
            heartbeats(listener.received).last == ControlHeartbeat(rank: 2, step: 7, loss: 2.5, tokensPerSecond: 100,
                                                                   deviceMemoryUsedBytes: 123, health: .ok)
        })

        let step = ControlStepReport(rank: 2, step: 7, loss: 2.5, tokensPerSecond: 100, stepMs: 10, computeMs: 8, idleMs: 1,
                                     exchangeMs: 1, share: 4, validationLoss: nil)
        let fault = ControlFaultReport(rank: 2, step: 7, kind: .nonFinite, message: "loss is NaN")
        client.report(step)
        client.report(fault)
        #expect(eventually { listener.received.contains(.stepReport(step)) && listener.received.contains(.faultReport(fault)) })
        let order = listener.received.filter { if case .stepReport = $0 { true } else if case .faultReport = $0 { true } else { false } }
        #expect(order == [.stepReport(step), .faultReport(fault)])

        let command = ControlCommand(kind: .checkpointNow, reason: "test")
        #expect(listener.send(.command(command), token: Array(repeating: 0, count: 16)))  // wrong token: ignored
        #expect(listener.send(.command(command)))
        var got: [ControlCommand] = []
        #expect(eventually { got += client.takeCommands(); return !got.isEmpty })
        #expect(got == [command])
        #expect(client.droppedReports == 0)
    }

    @Test("stop flushes what is queued")
    func stopFlushes() throws {
        let token = ControlToken.random()
        let listener = try #require(TestListener(token: token))
        defer { listener.shutdown() }
        let client = ControlClient(endpoint: ControlEndpoint(host: "127.0.0.1", port: listener.port, token: token),
                                   hello: clientHello, heartbeatSeconds: 5, retrySeconds: 0.2)
        client.start()
        #expect(eventually { client.isConnected })
        let reports = (1...50).map {
            ControlStepReport(rank: 2, step: $0, loss: 1, tokensPerSecond: 1, stepMs: 1, computeMs: 1, idleMs: 0,
                              exchangeMs: 0, share: 1)
        }
        for r in reports { client.report(r) }
        client.stop(flushTimeoutSeconds: 2)
        #expect(!client.isConnected)
        #expect(eventually { listener.received.filter { if case .stepReport = $0 { true } else { false } }.count == 50 })
        // After stop, calls return and do nothing.
        client.report(reports[0])
        client.update(step: 1, loss: nil, tokensPerSecond: nil, deviceMemoryUsedBytes: 0, health: .idle)
        client.stop()
    }

    @Test("the client survives the listener closing and reconnects when it comes back")
    func reconnects() throws {
        let token = ControlToken.random()
        let first = try #require(TestListener(token: token))
        let port = first.port
        let client = ControlClient(endpoint: ControlEndpoint(host: "127.0.0.1", port: port, token: token),
                                   hello: clientHello, heartbeatSeconds: 0.1, retrySeconds: 0.2)
        client.start()
        defer { client.stop(flushTimeoutSeconds: 0.5) }
        #expect(eventually { hellos(first.received).count == 1 && client.isConnected })
        first.shutdown()
        #expect(eventually { !client.isConnected })
        // Reports while nobody listens are queued (and return at once).
        let fault = ControlFaultReport(rank: 2, step: 3, kind: .timeout, message: "while away")
        client.report(fault)
        let second = try #require(TestListener(token: token, port: port))
        defer { second.shutdown() }
        #expect(eventually(10) { hellos(second.received).count == 1 })
        #expect(eventually { client.isConnected })
        #expect(eventually { heartbeats(second.received).count >= 2 })
        #expect(eventually { second.received.contains(.faultReport(fault)) })
    }

    @Test("with no listener at all, update and report return at once, drops are counted, stop is bounded")
    func noListener() {
        let port = freePort()
        let client = ControlClient(endpoint: ControlEndpoint(host: "127.0.0.1", port: port, token: ControlToken.random()),
                                   hello: clientHello, heartbeatSeconds: 0.05, retrySeconds: 0.05, queueLimit: 8)
        client.start()
        let t0 = Date()
        for i in 0..<2000 {
            client.update(step: i, loss: 1, tokensPerSecond: 1, deviceMemoryUsedBytes: 0, health: .ok)
            client.report(ControlFaultReport(rank: 2, step: i, kind: .other, message: "x"))
        }
        #expect(Date().timeIntervalSince(t0) < 2)
        #expect(!client.isConnected)
        #expect(client.droppedReports == 2000 - 8)
        #expect(client.takeCommands().isEmpty)
        let t1 = Date()
        client.stop(flushTimeoutSeconds: 0.5)
        #expect(Date().timeIntervalSince(t1) < 3)

        // An unresolvable host and a client never started are harmless too.
        let lost = ControlClient(endpoint: ControlEndpoint(host: "no-such-host.invalid", port: 9, token: []), hello: clientHello,
                                 retrySeconds: 0.05)
        lost.start()
        lost.report(ControlFaultReport(rank: 0, step: 0, kind: .other, message: ""))
        lost.stop(flushTimeoutSeconds: 0.2)
        let idle = ControlClient(endpoint: ControlEndpoint(host: "127.0.0.1", port: port, token: []), hello: clientHello)
        idle.report(ControlFaultReport(rank: 0, step: 0, kind: .other, message: ""))
        idle.stop()
    }

    @Test("a supervisor that sends an oversized frame is disconnected; the client reconnects")
    func poisonedStreamReconnects() throws {
        let token = ControlToken.random()
        let listener = try #require(TestListener(token: token))
        defer { listener.shutdown() }
        let client = ControlClient(endpoint: ControlEndpoint(host: "127.0.0.1", port: listener.port, token: token),
                                   hello: clientHello, heartbeatSeconds: 0.2, retrySeconds: 0.2)
        client.start()
        defer { client.stop(flushTimeoutSeconds: 0.2) }
        #expect(eventually { listener.connectionCount == 1 && client.isConnected })
        // A frame header announcing 16 MiB: the client must drop the connection and come back.
        #expect(listener.sendRaw([0x01, 0x00, 0x00, 0x00]))
        #expect(eventually(10) { listener.connectionCount >= 2 })
        #expect(eventually { hellos(listener.received).count >= 2 })
    }
}

extension TestListener {
    func sendRaw(_ bytes: [UInt8]) -> Bool {
        let c = currentFD
        guard c >= 0 else { return false }
        return bytes.withUnsafeBytes { Glibc.send(c, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } == bytes.count
    }
}
