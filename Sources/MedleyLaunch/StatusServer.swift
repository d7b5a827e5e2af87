import Foundation
import MedleyCore
import NIOCore
import NIOHTTP1
import NIOPosix

/// `/metrics`, `/status.json` and the status page `/`, over HTTP/1.1 (SwiftNIO), from a fresh
/// ``StatusSnapshot`` per request.
///
/// `GET /metrics`: Prometheus text (``StatusMetrics``). `GET /status.json`: the snapshot.
/// `GET /`: the page (``StatusPage``), which polls `/status.json` every second. `HEAD` as `GET`
/// without the body; anything else is 404 (unknown path) or 405 (another method). A request
/// head over 16 KiB, a request with a body, or bytes that are not HTTP get a 400 and the
/// connection closes; the server goes on. Each response closes its connection.
public final class StatusServer: @unchecked Sendable {
    /// The port the server got (the one asked for, or the kernel's choice for 0).
    public let port: Int
    private let group: MultiThreadedEventLoopGroup
    private let channel: Channel

    /// Serves on `host:port` (0: any free port). Throws one line when the port is taken.
    public init(host: String = "127.0.0.1", port: Int, snapshot: @escaping @Sendable () -> StatusSnapshot) throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        self.group = group
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 64)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline(withErrorHandling: true).flatMap {
                    channel.pipeline.addHandler(StatusHTTPHandler(snapshot: snapshot))
                }
            }
        do {
            channel = try bootstrap.bind(host: host, port: port).wait()
        } catch {
            try? group.syncShutdownGracefully()
            throw MedleyError(
                .io, "the metrics and status page cannot listen on \(host):\(port) (\(error)); pick another --metrics-port (or supervise.metrics_port), or 0 for none")
        }
        self.port = channel.localAddress?.port ?? port
    }

    /// Closes the listener and its connections.
    public func shutdown() {
        try? channel.close().wait()
        try? group.syncShutdownGracefully()
    }
}

/// One connection: a request head in, one response out, then close.
final class StatusHTTPHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let snapshot: @Sendable () -> StatusSnapshot
    private var head: HTTPRequestHead?
    private var bodyBytes = 0
    static let headLimit = 16 * 1024

    init(snapshot: @escaping @Sendable () -> StatusSnapshot) {
        self.snapshot = snapshot
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let request):
            head = request
            let size = request.uri.utf8.count + request.headers.reduce(0) { $0 + $1.name.utf8.count + $1.value.utf8.count + 4 }
            if size > Self.headLimit {
                respond(context, .badRequest, "text/plain", Array("request head too large\n".utf8), includeBody: true)
                head = nil
            }
        case .body(let body):
            bodyBytes += body.readableBytes
        case .end:
            guard let request = head else { return }
            head = nil
            if bodyBytes > 0 {
                respond(context, .badRequest, "text/plain", Array("no request body expected\n".utf8), includeBody: true)
                return
            }
            route(context, request)
        }
    }

    private func route(_ context: ChannelHandlerContext, _ request: HTTPRequestHead) {
        let path = request.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? request.uri
        let known = ["/", "/index.html", "/metrics", "/status.json"]
        guard known.contains(path) else {
            respond(context, .notFound, "text/plain", Array("not found: try /, /metrics or /status.json\n".utf8), includeBody: true)
            return
        }
        guard request.method == .GET || request.method == .HEAD else {
            respond(context, .methodNotAllowed, "text/plain", Array("only GET and HEAD\n".utf8), includeBody: true, allow: true)
            return
        }
        let includeBody = request.method == .GET
        switch path {
        case "/metrics":
            respond(context, .ok, "text/plain; version=0.0.4; charset=utf-8", Array(StatusMetrics.text(snapshot()).utf8), includeBody: includeBody)
        case "/status.json":
            respond(context, .ok, "application/json", Array(snapshot().jsonData()), includeBody: includeBody)
        default:
            respond(context, .ok, "text/html; charset=utf-8", Array(StatusPage.html.utf8), includeBody: includeBody)
        }
    }

    private func respond(_ context: ChannelHandlerContext, _ status: HTTPResponseStatus, _ type: String, _ body: [UInt8],
                         includeBody: Bool, allow: Bool = false) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: type)
        headers.add(name: "Content-Length", value: "\(body.count)")
        headers.add(name: "Cache-Control", value: "no-store")
        headers.add(name: "Connection", value: "close")
        if allow { headers.add(name: "Allow", value: "GET, HEAD") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        if includeBody {
            var buffer = context.channel.allocator.buffer(capacity: body.count)
            buffer.writeBytes(body)
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        }
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}
