#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Small POSIX socket helpers for the control client (non-blocking, never SIGPIPE).
enum ControlSocket {
    /// Seconds on a monotonic clock.
    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    static func setNonBlocking(_ fd: Int32) {
        let flags = fcntl(fd, F_GETFL, 0)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
    }

    /// A pipe whose read end wakes a poll; both ends non-blocking.
    static func wakePipe() -> (read: Int32, write: Int32) {
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { return (-1, -1) }
        setNonBlocking(fds[0])
        setNonBlocking(fds[1])
        return (fds[0], fds[1])
    }

    static func drain(_ fd: Int32) {
        var scratch = [UInt8](repeating: 0, count: 64)
        while read(fd, &scratch, scratch.count) > 0 {}
    }

    static var streamType: Int32 {
        #if os(Linux)
        Int32(SOCK_STREAM.rawValue)
        #else
        SOCK_STREAM
        #endif
    }

    /// Milliseconds for poll from seconds, at least 0, at most a minute.
    static func pollMillis(_ seconds: Double) -> Int32 {
        guard seconds.isFinite, seconds > 0 else { return 0 }
        return Int32(min(60_000, (seconds * 1000).rounded(.up)))
    }

    /// Connects to host:port within `timeout` seconds (or until `wake` becomes readable and `abort()` says so), trying
    /// each address the name resolves to. The socket comes back non-blocking with TCP_NODELAY; -1 on failure.
    static func connect(host: String, port: Int, timeout: Double, wake: Int32, abort: () -> Bool) -> Int32 {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = streamType
        #if os(Linux)
        hints.ai_flags = AI_NUMERICSERV
        #endif
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &list) == 0, let first = list else { return -1 }
        defer { freeaddrinfo(first) }
        let deadline = now() + max(0.01, timeout)
        var cursor: UnsafeMutablePointer<addrinfo>? = first
        while let ai = cursor {
            cursor = ai.pointee.ai_next
            let fd = socket(ai.pointee.ai_family, streamType, ai.pointee.ai_protocol)
            if fd < 0 { continue }
            setNonBlocking(fd)
            configure(fd)
            var ok = posixConnect(fd, ai.pointee.ai_addr, ai.pointee.ai_addrlen) == 0
            if !ok, errno == EINPROGRESS {
                while now() < deadline {
                    var fds = [pollfd(fd: fd, events: Int16(POLLOUT), revents: 0),
                               pollfd(fd: wake, events: Int16(POLLIN), revents: 0)]
                    let n = poll(&fds, wake >= 0 ? 2 : 1, pollMillis(deadline - now()))
                    if n < 0, errno == EINTR { continue }
                    if n <= 0 { break }
                    if fds[0].revents != 0 {
                        var err: Int32 = 0
                        var len = socklen_t(MemoryLayout<Int32>.size)
                        ok = getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0
                        break
                    }
                    if fds[1].revents != 0 {
                        drain(wake)
                        if abort() { break }
                    }
                }
            }
            if ok { return fd }
            close(fd)
            if now() >= deadline { break }
        }
        return -1
    }

    /// TCP_NODELAY, and no SIGPIPE where the platform needs a socket option for it.
    static func configure(_ fd: Int32) {
        var one: Int32 = 1
        _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        #if !os(Linux)
        _ = setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, socklen_t(MemoryLayout<Int32>.size))
        #endif
    }

    static var sendFlags: Int32 {
        #if os(Linux)
        Int32(MSG_NOSIGNAL)
        #else
        0
        #endif
    }

    /// Sends what the socket takes now. Returns the bytes sent, 0 when it would block, nil on error.
    static func sendSome(_ fd: Int32, _ bytes: [UInt8], from offset: Int) -> Int? {
        guard offset < bytes.count else { return 0 }
        let n = bytes.withUnsafeBytes { raw in
            send(fd, raw.baseAddress! + offset, raw.count - offset, sendFlags)
        }
        if n >= 0 { return n }
        if errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR { return 0 }
        return nil
    }
}

@inline(__always)
private func posixConnect(_ fd: Int32, _ addr: UnsafeMutablePointer<sockaddr>!, _ len: socklen_t) -> Int32 {
    connect(fd, addr, len)
}
