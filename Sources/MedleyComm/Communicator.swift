import CMPI
import MedleyCore

/// A group of ranks that talk to each other: a typed wrapper over an `MPI_Comm`.
///
/// Every call checks MPI's return code and throws `MedleyError(.communication)` with
/// `MPI_Error_string`'s text; the communicator's error handler returns codes instead of
/// aborting. Collective calls must be made by every rank of the communicator, in the same order.
public struct Communicator: @unchecked Sendable, CustomStringConvertible {
    // MPI_Comm is a pointer to an Open MPI object. The struct only reads it; MPI itself
    // serializes use according to the thread level negotiated at init, so sharing is safe.
    let handle: MPI_Comm
    /// This process's rank in the communicator, `0..<size`.
    public let rank: Int
    /// How many ranks the communicator has.
    public let size: Int
    private let ownsHandle: Bool

    init(handle: MPI_Comm, owns: Bool) throws {
        self.handle = handle
        self.ownsHandle = owns
        var r: Int32 = 0
        var s: Int32 = 0
        try mpiCheck(MPI_Comm_rank(handle, &r), "MPI_Comm_rank")
        try mpiCheck(MPI_Comm_size(handle, &s), "MPI_Comm_size")
        self.rank = Int(r)
        self.size = Int(s)
    }

    /// Every rank of the job (`MPI_COMM_WORLD`); MPI must be initialized.
    public static func world() throws -> Communicator {
        guard MPIRuntime.isInitialized else {
            throw MedleyError(.communication, "MPI is not initialized: call MPIRuntime.initialize() first")
        }
        return try Communicator(handle: CMPI_comm_world(), owns: false)
    }

    /// "rank R of S".
    public var description: String { "rank \(rank) of \(size)" }

    /// Splits into sub-communicators: ranks that pass the same `color` land in the same one,
    /// ordered by `key` (then by rank). A rank passing `nil` takes part but gets `nil` back.
    ///
    /// Use it for data-parallel groups (color = stage) and pipeline neighbours (color = replica).
    public func split(color: Int?, key: Int = 0) throws -> Communicator? {
        var newComm: MPI_Comm? = nil
        let c: Int32 = color.map { Int32($0) } ?? CMPI_undefined()
        if let color, color < 0 { throw MedleyError(.invalidArgument, "split color must be >= 0, got \(color)") }
        try mpiCheck(MPI_Comm_split(handle, c, Int32(key), &newComm), "MPI_Comm_split")
        guard let newComm, newComm != CMPI_comm_null() else { return nil }
        try mpiCheck(MPI_Comm_set_errhandler(newComm, CMPI_errors_return()), "MPI_Comm_set_errhandler")
        return try Communicator(handle: newComm, owns: true)
    }

    /// A new communicator with the same ranks (`MPI_Comm_dup`, collective): a private channel
    /// for a library, so its messages never match the caller's.
    public func duplicate() throws -> Communicator {
        var newComm: MPI_Comm? = nil
        try mpiCheck(MPI_Comm_dup(handle, &newComm), "MPI_Comm_dup")
        guard let newComm else { throw MedleyError(.communication, "MPI_Comm_dup returned no communicator") }
        try mpiCheck(MPI_Comm_set_errhandler(newComm, CMPI_errors_return()), "MPI_Comm_set_errhandler")
        return try Communicator(handle: newComm, owns: true)
    }

    /// Frees a communicator made by ``split(color:key:)`` or ``duplicate()`` (a no-op for the world).
    public func free() throws {
        // After MPI_Finalize every handle is gone already; freeing one then would be an MPI error.
        guard ownsHandle, !MPIRuntime.isFinalized else { return }
        var h: MPI_Comm? = handle
        try mpiCheck(MPI_Comm_free(&h), "MPI_Comm_free")
    }

    /// Waits until every rank has called it.
    public func barrier() throws {
        try mpiCheck(MPI_Barrier(handle), "MPI_Barrier")
    }

    func checkPeer(_ peer: Int, _ what: String) throws {
        guard (0..<size).contains(peer) else {
            throw MedleyError(.invalidArgument, "\(what): rank \(peer) is outside 0..<\(size)")
        }
    }
}

// MARK: - Point to point

/// Where a received message came from.
public struct MessageInfo: Sendable, Equatable {
    /// The sender's rank.
    public var source: Int
    /// The message tag.
    public var tag: Int
    /// How many elements arrived.
    public var count: Int
}

extension Communicator {
    /// Sends `values` to rank `destination` (blocking until the buffer can be reused).
    public func send<T: CommunicableElement>(_ values: [T], to destination: Int, tag: Int = 0) throws {
        try checkPeer(destination, "send")
        try values.withUnsafeBufferPointer { try send($0, to: destination, tag: tag) }
    }

    /// Sends the elements of a buffer to rank `destination`.
    public func send<T: CommunicableElement>(_ buffer: UnsafeBufferPointer<T>, to destination: Int, tag: Int = 0) throws {
        guard buffer.count <= Int(Int32.max) else {
            throw MedleyError(.invalidArgument, "send of \(buffer.count) elements exceeds MPI's count limit")
        }
        try mpiCheck(
            MPI_Send(buffer.baseAddress, Int32(buffer.count), T.datatype.handle, Int32(destination), Int32(tag), handle),
            "MPI_Send to rank \(destination)")
    }

    /// Receives one message of any length up to `maxCount` elements from `source`
    /// (any rank when `nil`) with `tag` (any tag when `nil`).
    ///
    /// The length is probed first; a message longer than `maxCount` is a `.corruption` error
    /// naming the sender, raised before anything is allocated. There is no default bound:
    /// the caller passes the most the job can send here (a header's size, a schedule's tensor).
    public func receive<T: CommunicableElement>(
        _: T.Type = T.self, from source: Int? = nil, tag: Int? = nil, maxCount: Int
    ) throws -> (values: [T], info: MessageInfo) {
        if let source { try checkPeer(source, "receive") }
        let src = source.map { Int32($0) } ?? CMPI_any_source()
        let tg = tag.map { Int32($0) } ?? CMPI_any_tag()
        var status = MPI_Status()
        try mpiCheck(MPI_Probe(src, tg, handle, &status), "MPI_Probe")
        var count: Int32 = 0
        try mpiCheck(MPI_Get_count(&status, T.datatype.handle, &count), "MPI_Get_count")
        let from = CMPI_status_source(&status)
        let gotTag = CMPI_status_tag(&status)
        try PeerLimits.check(Int(count), allowed: maxCount, peer: Int(from), what: "elements in one message (tag \(gotTag))")
        var values = [T](unsafeUninitializedCapacity: Int(count)) { _, n in n = Int(count) }
        try values.withUnsafeMutableBufferPointer { buf in
            try mpiCheck(
                MPI_Recv(buf.baseAddress, count, T.datatype.handle, from, gotTag, handle, CMPI_status_ignore()),
                "MPI_Recv from rank \(from)")
        }
        return (values, MessageInfo(source: Int(from), tag: Int(gotTag), count: Int(count)))
    }

    /// Receives into `buffer` from `source`; returns how many elements arrived.
    /// A message longer than the buffer is an MPI truncation error (thrown).
    @discardableResult
    public func receive<T: CommunicableElement>(
        into buffer: UnsafeMutableBufferPointer<T>, from source: Int, tag: Int = 0
    ) throws -> Int {
        try checkPeer(source, "receive")
        var status = MPI_Status()
        try mpiCheck(
            MPI_Recv(buffer.baseAddress, Int32(buffer.count), T.datatype.handle, Int32(source), Int32(tag), handle, &status),
            "MPI_Recv from rank \(source)")
        var count: Int32 = 0
        try mpiCheck(MPI_Get_count(&status, T.datatype.handle, &count), "MPI_Get_count")
        return Int(count)
    }

    /// Sends `send` to `destination` and receives into `receive` from `source` at once,
    /// so a ring of ranks can shift data without deadlock.
    public func sendReceive<T: CommunicableElement>(
        _ send: UnsafeBufferPointer<T>, to destination: Int,
        into receive: UnsafeMutableBufferPointer<T>, from source: Int, tag: Int = 0
    ) throws {
        try mpiCheck(
            MPI_Sendrecv(
                send.baseAddress, Int32(send.count), T.datatype.handle, Int32(destination), Int32(tag),
                receive.baseAddress, Int32(receive.count), T.datatype.handle, Int32(source), Int32(tag),
                handle, CMPI_status_ignore()),
            "MPI_Sendrecv (to \(destination), from \(source))")
    }
}

// MARK: - Non-blocking (internal: requests never leave MedleyComm)

extension Communicator {
    /// Starts a send; the buffer must stay untouched until ``wait(_:)``.
    func startSend<T: CommunicableElement>(_ buffer: UnsafeBufferPointer<T>, to destination: Int, tag: Int) throws -> MPI_Request? {
        var request: MPI_Request? = nil
        try mpiCheck(
            MPI_Isend(buffer.baseAddress, Int32(buffer.count), T.datatype.handle, Int32(destination), Int32(tag), handle, &request),
            "MPI_Isend to rank \(destination)")
        return request
    }

    /// Starts a receive into a buffer that must stay alive until ``wait(_:)``.
    func startReceive<T: CommunicableElement>(_ buffer: UnsafeMutableBufferPointer<T>, from source: Int, tag: Int) throws -> MPI_Request? {
        var request: MPI_Request? = nil
        try mpiCheck(
            MPI_Irecv(buffer.baseAddress, Int32(buffer.count), T.datatype.handle, Int32(source), Int32(tag), handle, &request),
            "MPI_Irecv from rank \(source)")
        return request
    }

    /// Waits for a started send or receive to finish.
    func wait(_ request: inout MPI_Request?) throws {
        try mpiCheck(MPI_Wait(&request, CMPI_status_ignore()), "MPI_Wait")
    }
}
