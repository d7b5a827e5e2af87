import Foundation

/// Where a rank finds its supervisor: environment MEDLEY_CONTROL=host:port and MEDLEY_CONTROL_TOKEN=<32 hex>.
public struct ControlEndpoint: Sendable, Hashable {
    public var host: String
    public var port: Int
    public var token: [UInt8]

    public static let addressVariable = "MEDLEY_CONTROL"
    public static let tokenVariable = "MEDLEY_CONTROL_TOKEN"

    public init(host: String, port: Int, token: [UInt8]) {
        self.host = host
        self.port = port
        self.token = token
    }

    /// The endpoint the environment names, or nil when either variable is missing or malformed
    /// (`host:port` with a port in 1...65535, an IPv6 host in brackets: `[::1]:7000`; a token of
    /// exactly 32 hex digits). A rank without one runs without a supervisor.
    public static func fromEnvironment(_ env: [String: String] = ProcessInfo.processInfo.environment) -> ControlEndpoint? {
        guard let address = env[addressVariable], let tokenText = env[tokenVariable],
              let token = ControlToken.parse(hex: tokenText.trimmingCharacters(in: .whitespaces)),
              let (host, port) = parseAddress(address.trimmingCharacters(in: .whitespaces))
        else { return nil }
        return ControlEndpoint(host: host, port: port, token: token)
    }

    /// `host:port` → its parts; `[v6]:port` for IPv6 literals.
    public static func parseAddress(_ s: String) -> (host: String, port: Int)? {
        let host: Substring
        let portText: Substring
        if s.hasPrefix("[") {
            guard let close = s.firstIndex(of: "]") else { return nil }
            host = s[s.index(after: s.startIndex)..<close]
            let rest = s[s.index(after: close)...]
            guard rest.hasPrefix(":") else { return nil }
            portText = rest.dropFirst()
        } else {
            guard let colon = s.lastIndex(of: ":") else { return nil }
            host = s[..<colon]
            portText = s[s.index(after: colon)...]
            guard !host.contains(":") else { return nil }
        }
        guard !host.isEmpty, host.utf8.count <= 255, !host.contains(where: { $0.isWhitespace || $0 == "\0" }),
              portText.allSatisfy(\.isASCII), let port = Int(portText), (1...65_535).contains(port)
        else { return nil }
        return (String(host), port)
    }

    /// The variables that hand this endpoint to a rank.
    public var environment: [String: String] {
        let h = host.contains(":") ? "[\(host)]" : host
        return [Self.addressVariable: "\(h):\(port)", Self.tokenVariable: ControlToken.hex(token)]
    }
}
