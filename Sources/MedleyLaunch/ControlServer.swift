import Foundation
import MedleyControl
import MedleyCore
import MedleySupervisor
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// The supervisor's end of the control channel: a TCP listener (SwiftNIO) that decodes each
/// connection's frames with the job's token and hands every message, and every frame it
/// drops, to `onEvent` as a ``SupervisorEvent``. It sends ``ControlCommand``s to the rank
/// that said hello on a connection. It decides nothing: the ``Supervisor`` does.
///
/// A connection from a host outside `allowedHosts`, a frame with another token, one that does
/// not decode, or one whose length prefix passes the limit is dropped and counted (an
/// oversized prefix also closes the connection: the stream cannot be resynchronized).
public final class ControlServer: @unchecked Sendable {
    /// The port the listener got (the one asked for, or the kernel's choice for 0).
    public let port: Int
    /// The job's token.
    public let token: [UInt8]

    private let group: MultiThreadedEventLoopGroup
    private let channel: Channel
    private let connections = NIOLockedValueBox<[Int: Channel]>([:])

    /// Listens on `host:port` (0: any free port). Throws one line when the port is taken.
    public init(
        host: String = "127.0.0.1", port: Int = 0, token: [UInt8], allowedHosts: Set<String>? = nil,
        clock: @escaping @Sendable () -> Double, onEvent: @escaping @Sendable (SupervisorEvent) -> Void,
        onDisconnect: @escaping @Sendable (Int) -> Void = { _ in }
    ) throws {
        self.token = token
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        self.group = group
        let connections = self.connections
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 256)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                let peer = channel.remoteAddress?.ipAddress ?? "?"
                if let allowedHosts, !allowedHosts.contains(peer) {
                    onEvent(.droppedFrame(reason: "host outside the job", peer: peer, at: clock()))
                    return channel.close()
                }
                let handler = ControlConnectionHandler(
                    token: token, peer: peer, clock: clock, onEvent: onEvent,
                    onHello: { rank, channel in connections.withLockedValue { $0[rank] = channel } },
                    onClose: { rank, channel in
                        connections.withLockedValue { if $0[rank] === channel { $0[rank] = nil } }
                        onDisconnect(rank)
                    })
                return channel.pipeline.addHandler(handler)
            }
        do {
            channel = try bootstrap.bind(host: host, port: port).wait()
        } catch {
            try? group.syncShutdownGracefully()
            throw MedleyError(
                .io, "the control channel cannot listen on \(host):\(port) (\(error)); pick another --control-port or free that one")
        }
        self.port = channel.localAddress?.port ?? port
    }

    /// Sends `command` to `rank`'s connection; false when that rank is not connected.
    @discardableResult
    public func send(_ command: ControlCommand, to rank: Int) -> Bool {
        guard let channel = connections.withLockedValue({ $0[rank] }) else { return false }
        let bytes = ControlWire.encode(.command(command), token: token)
        var buffer = channel.allocator.buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        channel.writeAndFlush(buffer, promise: nil)
        return true
    }

    /// Ranks connected now.
    public var connectedRanks: [Int] { connections.withLockedValue { $0.keys.sorted() } }

    /// The text of a socket address ("10.1.0.2", "fe80::1%eth0"), or nil.
    private static func numericHost(_ address: UnsafePointer<sockaddr>, length: socklen_t) -> String? {
        var text = [CChar](repeating: 0, count: Int(NI_MAXHOST))
        guard getnameinfo(address, length, &text, socklen_t(text.count), nil, 0, NI_NUMERICHOST) == 0 else { return nil }
        return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Every IPv4 and IPv6 address of this host's interfaces, with the interface's name.
    private static func addresses() -> [(interface: String, family: Int32, address: String)] {
        var result: [(String, Int32, String)] = []
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0, let first = list else { return result }
        defer { freeifaddrs(list) }
        var entry: UnsafeMutablePointer<ifaddrs>? = first
        while let current = entry {
            if let address = current.pointee.ifa_addr {
                let family = Int32(address.pointee.sa_family)
                if family == AF_INET || family == AF_INET6 {
                    let length = socklen_t(family == AF_INET ? MemoryLayout<sockaddr_in>.size : MemoryLayout<sockaddr_in6>.size)
                    if let text = numericHost(address, length: length) {
                        result.append((String(cString: current.pointee.ifa_name), family, text))
                    }
                }
            }
            entry = current.pointee.ifa_next
        }
        return result
    }

    /// The IPv4 addresses of this host's interfaces, by interface name.
    public static func interfaceAddresses() -> [(interface: String, address: String)] {
        addresses().filter { $0.family == AF_INET }.map { ($0.interface, $0.address) }
    }

    /// The IPv4 addresses `host` resolves to (a name or an address); empty when it does not.
    public static func resolve(_ host: String) -> Set<String> {
        var hints = addrinfo()
        hints.ai_family = AF_INET
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, nil, &hints, &list) == 0, let first = list else { return [] }
        defer { freeaddrinfo(list) }
        var result: Set<String> = []
        var entry: UnsafeMutablePointer<addrinfo>? = first
        while let current = entry {
            if let address = current.pointee.ai_addr, let text = numericHost(address, length: current.pointee.ai_addrlen) {
                result.insert(text)
            }
            entry = current.pointee.ai_next
        }
        return result
    }

    /// Whether IPv4 `address` lies in `subnet` ("10.1.0.0/16").
    static func address(_ address: String, isIn subnet: String) -> Bool {
        let parts = subnet.split(separator: "/")
        guard parts.count == 2, let bits = Int(parts[1]), (0...32).contains(bits) else { return false }
        func value(_ text: Substring) -> UInt32? {
            let octets = text.split(separator: ".").compactMap { UInt32($0) }
            guard octets.count == 4, octets.allSatisfy({ $0 < 256 }) else { return nil }
            return octets.reduce(0) { $0 << 8 | $1 }
        }
        guard let a = value(Substring(address)), let n = value(parts[0]) else { return false }
        let mask: UInt32 = bits == 0 ? 0 : ~UInt32(0) << (32 - UInt32(bits))
        return a & mask == n & mask
    }

    /// Where the control channel of a job across hosts is reached: this host's address on the
    /// first of `interfaces` (a name or a subnet) that it has, else its host name.
    public static func advertisedAddress(interfaces: [String]) -> String {
        let mine = interfaceAddresses()
        for wanted in interfaces {
            if let hit = mine.first(where: { $0.interface == wanted || address($0.address, isIn: wanted) }) { return hit.address }
        }
        return ProcessInfo.processInfo.hostName
    }

    /// Every IP address of this host's interfaces (loopback included), as SwiftNIO writes a
    /// peer's address: the hosts a single-host job's ranks connect from.
    public static func localAddresses() -> Set<String> {
        // A scoped IPv6 address ("fe80::1%eth0"): SwiftNIO writes it without the scope.
        Set(["127.0.0.1", "::1"] + addresses().map { String($0.address.split(separator: "%").first ?? Substring($0.address)) })
    }

    /// Closes the listener and every connection.
    public func shutdown() {
        try? channel.close().wait()
        for connection in connections.withLockedValue({ Array($0.values) }) { try? connection.close().wait() }
        try? group.syncShutdownGracefully()
    }
}

/// One rank's connection: bytes in, decoded messages (or drops) out as supervisor events.
final class ControlConnectionHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer

    private var decoder: ControlFrameDecoder
    private let peer: String
    private let clock: @Sendable () -> Double
    private let onEvent: @Sendable (SupervisorEvent) -> Void
    private let onHello: @Sendable (Int, Channel) -> Void
    private let onClose: @Sendable (Int, Channel) -> Void
    /// The rank that said hello on this connection.
    private var rank: Int?

    init(
        token: [UInt8], peer: String, clock: @escaping @Sendable () -> Double,
        onEvent: @escaping @Sendable (SupervisorEvent) -> Void, onHello: @escaping @Sendable (Int, Channel) -> Void,
        onClose: @escaping @Sendable (Int, Channel) -> Void
    ) {
        decoder = ControlFrameDecoder(token: token)
        self.peer = peer
        self.clock = clock
        self.onEvent = onEvent
        self.onHello = onHello
        self.onClose = onClose
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        buffer.withUnsafeReadableBytes { decoder.append($0) }
        while let result = decoder.next() {
            let now = clock()
            switch result {
            case .dropped(let reason):
                onEvent(.droppedFrame(reason: reason.rawValue, peer: peer, at: now))
            case .message(let message):
                switch message {
                case .hello(let hello):
                    rank = hello.rank
                    onHello(hello.rank, context.channel)
                    onEvent(.hello(hello, at: now))
                case .heartbeat(let beat): onEvent(.heartbeat(beat, at: now))
                case .stepReport(let report): onEvent(.stepReport(report, at: now))
                case .faultReport(let fault): onEvent(.faultReport(fault, at: now))
                case .command:
                    // Commands go from the supervisor to ranks, never back.
                    onEvent(.droppedFrame(reason: "command from a rank", peer: peer, at: now))
                }
            }
        }
        if decoder.isPoisoned { context.close(promise: nil) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let rank { onClose(rank, context.channel) }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}
