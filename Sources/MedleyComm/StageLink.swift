import CMPI
import Foundation
import MedleyCore

/// The point-to-point link from one pipeline stage to a neighbour: activations go forward,
/// their gradients come back, through host memory (neighbours may be chips of different
/// vendors).
///
/// Each tensor travels as ONE message: its ``ActivationHeader`` frame, zero-padded to
/// ``headerRegion`` bytes (so the payload starts 64-byte aligned), then the payload. Sends
/// never block: the caller fills the payload straight into a buffer the link owns (a chip
/// reads its output into it), and the message is posted with `MPI_Isend`, so two neighbours
/// sending to each other at once cannot deadlock; finished sends hand their buffers back for
/// reuse as later calls poll them, so a step allocates nothing. Receives wait with a
/// deadline, sleeping between polls, land in one buffer the link keeps, and check the header
/// against what the schedule expects before the caller reads the payload in place: a message
/// for the wrong step, microbatch, stage, shape or type is a named error, never a silent
/// mix-up or a hang.
public final class StageLink {
    /// The communicator both stages belong to.
    public let communicator: Communicator
    /// The neighbour's rank in `communicator`.
    public let peer: Int
    /// Tag of the messages this link sends, and of those it receives.
    let sendTag: Int32
    let receiveTag: Int32
    /// Posted sends and the buffers they read from.
    private var pending: [(request: MPI_Request?, buffer: UnsafeMutableRawBufferPointer)] = []
    /// Buffers of finished sends, kept for the next ones.
    private var spare: [UnsafeMutableRawBufferPointer] = []
    /// Where received messages land (grown to the largest seen).
    private var inbox = UnsafeMutableRawBufferPointer(start: nil, count: 0)

    /// Tag of activations (stage s → s + 1).
    public static let activationTag = 1_101
    /// Tag of activation gradients (stage s + 1 → s).
    public static let gradientTag = 1_102
    /// Bytes before the payload in every message: the header frame, then zeros.
    public static let headerRegion = 256
    /// Send buffers kept for reuse (more in flight at once are freed when they finish).
    static let spareLimit = 4

    /// A link to `peer`, sending with tag `sendTag` and receiving with `receiveTag`
    /// (toward the next stage: activation out, gradient in; toward the previous: the reverse).
    public init(communicator: Communicator, peer: Int, sendTag: Int, receiveTag: Int) throws {
        guard peer >= 0, peer < communicator.size, peer != communicator.rank else {
            throw MedleyError(.invalidArgument, "stage link: peer \(peer) is not another rank of \(communicator.size)")
        }
        self.communicator = communicator
        self.peer = peer
        self.sendTag = Int32(sendTag)
        self.receiveTag = Int32(receiveTag)
    }

    deinit {
        // Sends still posted here mean the job is failing; MPI may still read those bytes,
        // so they are left allocated rather than freed under it.
        for send in pending where send.request == nil { send.buffer.deallocate() }
        for buffer in spare { buffer.deallocate() }
        inbox.deallocate()
    }

    /// Posts a message with `header` (its checksum filled in when `checksum` is true) whose
    /// `header.payloadBytes` of payload `fill` writes into the link's send buffer.
    public func send(
        _ header: ActivationHeader, checksum: Bool = false, fill: (UnsafeMutableRawBufferPointer) throws -> Void
    ) throws {
        try reclaim()
        let total = Self.headerRegion + header.payloadBytes
        guard header.payloadBytes >= 0, total <= Int(Int32.max) else {
            throw MedleyError(.invalidArgument, "stage link: a payload of \(header.payloadBytes) bytes does not fit one MPI message; use smaller microbatches")
        }
        let buffer = takeBuffer(total)
        var posted = false
        defer { if !posted { keep(buffer) } }
        let payload = UnsafeMutableRawBufferPointer(rebasing: buffer[Self.headerRegion..<total])
        try fill(payload)
        var header = header
        header.checksum = checksum ? Checksum.hash64(Array(UnsafeRawBufferPointer(payload))) | 1 : 0
        let frame = header.framed()
        guard frame.count <= Self.headerRegion else {
            throw MedleyError(.invalidArgument, "stage link: the header frame is \(frame.count) bytes, over the \(Self.headerRegion) reserved (a shape of \(header.shape.count) dimensions?)")
        }
        frame.withUnsafeBytes { buffer.copyMemory(from: $0) }
        UnsafeMutableRawBufferPointer(rebasing: buffer[frame.count..<Self.headerRegion]).initializeMemory(as: UInt8.self, repeating: 0)
        var request: MPI_Request? = nil
        try mpiCheck(
            MPI_Isend(buffer.baseAddress, Int32(total), CMPI_byte(), Int32(peer), sendTag, communicator.handle, &request),
            "MPI_Isend to rank \(peer)")
        posted = true
        pending.append((request, buffer))
    }

    /// Posts `header` and a copy of `payload` (which must be `header.payloadBytes` long).
    public func send(_ header: ActivationHeader, payload: UnsafeRawBufferPointer, checksum: Bool = false) throws {
        guard payload.count == header.payloadBytes else {
            throw MedleyError(.invalidArgument, "stage link: payload is \(payload.count) bytes, its header says \(header.payloadBytes)")
        }
        try send(header, checksum: checksum) { if payload.count > 0 { $0.copyMemory(from: payload) } }
    }

    /// Receives the next message from the peer, waiting at most `timeoutSeconds`, checks it,
    /// and hands its payload to `body` (valid only during the call) and returns what `body` returns.
    ///
    /// The header must match `expected` in step, microbatch, sending stage, shape and dtype, and
    /// the payload its size and checksum; `what` names the wait in errors (e.g. "step 3: stage
    /// 1 waiting for microbatch 2's activation").
    public func receive<R>(
        expected: ActivationHeader, timeoutSeconds: Double, what: String, _ body: (UnsafeRawBufferPointer) throws -> R
    ) throws -> R {
        let count = try waitForMessage(timeoutSeconds: timeoutSeconds, what: what)
        guard count >= Self.headerRegion else {
            throw MedleyError(.corruption, "\(what): rank \(peer) sent a \(count)-byte message, shorter than the \(Self.headerRegion)-byte header region; do both ranks run the same Medley?")
        }
        guard count <= Self.headerRegion + expected.payloadBytes else {
            throw MedleyError(
                .mismatch,
                "\(what): rank \(peer) sent \(count - Self.headerRegion) payload bytes, expected \(expected.payloadBytes) (microbatch \(expected.microbatch), shape \(expected.shape) \(expected.dtype)); the two stages disagree on the plan or the schedule")
        }
        if inbox.count < count {
            inbox.deallocate()
            inbox = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 64)
        }
        try mpiCheck(
            MPI_Recv(inbox.baseAddress, Int32(count), CMPI_byte(), Int32(peer), receiveTag, communicator.handle, CMPI_status_ignore()),
            "MPI_Recv from rank \(peer)")
        let header = try decodeHeader(what: what)
        let mismatch: String? =
            header.step != expected.step ? "step \(header.step)"
            : header.microbatch != expected.microbatch ? "microbatch \(header.microbatch)"
            : header.stage != expected.stage ? "stage \(header.stage)"
            : header.shape != expected.shape ? "shape \(header.shape)"
            : header.dtype != expected.dtype ? "dtype \(header.dtype)"
            : header.payloadBytes != expected.payloadBytes ? "\(header.payloadBytes) payload bytes" : nil
        if let mismatch {
            throw MedleyError(
                .mismatch,
                "\(what): rank \(peer) sent \(mismatch), expected step \(expected.step) microbatch \(expected.microbatch) from stage \(expected.stage), shape \(expected.shape) \(expected.dtype) (the two stages disagree on the plan or the schedule)")
        }
        guard count - Self.headerRegion == header.payloadBytes else {
            throw MedleyError(.corruption, "\(what): rank \(peer) sent \(count - Self.headerRegion) payload bytes, its header announced \(header.payloadBytes)")
        }
        let payload = UnsafeRawBufferPointer(rebasing: inbox[Self.headerRegion..<count])
        if header.checksum != 0, Checksum.hash64(Array(payload)) | 1 != header.checksum {
            throw MedleyError(.corruption, "\(what): the payload from rank \(peer) fails its checksum")
        }
        return try body(payload)
    }

    /// Receives the next message into `payload` (see ``receive(expected:timeoutSeconds:what:_:)``).
    public func receive(
        expected: ActivationHeader, into payload: UnsafeMutableRawBufferPointer, timeoutSeconds: Double, what: String
    ) throws {
        guard payload.count == expected.payloadBytes else {
            throw MedleyError(.invalidArgument, "stage link: a \(payload.count)-byte buffer for a \(expected.payloadBytes)-byte payload")
        }
        try receive(expected: expected, timeoutSeconds: timeoutSeconds, what: what) { bytes in
            if bytes.count > 0 { payload.copyMemory(from: bytes) }
        }
    }

    /// Waits until every posted send has completed (at most `timeoutSeconds`).
    public func finishSends(timeoutSeconds: Double, what: String) throws {
        try Communicator.poll(
            timeoutSeconds: timeoutSeconds,
            timeout: "\(what): rank \(peer) did not take \(pending.count) message(s) within \(Communicator.format(timeoutSeconds)) s; it is hung or far behind"
        ) { () -> Void? in
            try reclaim()
            return pending.isEmpty ? () : nil
        }
    }

    // MARK: Internals

    /// A send buffer of at least `bytes`: a spare one when one is large enough, else a new one.
    private func takeBuffer(_ bytes: Int) -> UnsafeMutableRawBufferPointer {
        if let i = spare.firstIndex(where: { $0.count >= bytes }) { return spare.remove(at: i) }
        return UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes, 1), alignment: 64)
    }

    /// Keeps a buffer no send uses any more for reuse, or frees it when enough are kept.
    private func keep(_ buffer: UnsafeMutableRawBufferPointer) {
        if spare.count < Self.spareLimit { spare.append(buffer) } else { buffer.deallocate() }
    }

    /// Hands back the buffers of sends that have completed.
    private func reclaim() throws {
        var i = 0
        while i < pending.count {
            var done: Int32 = 0
            try mpiCheck(MPI_Test(&pending[i].request, &done, CMPI_status_ignore()), "MPI_Test (send to rank \(peer))")
            if done != 0 { keep(pending.remove(at: i).buffer) } else { i += 1 }
        }
    }

    /// The header frame at the start of the received message.
    private func decodeHeader(what: String) throws -> ActivationHeader {
        let region = Array(UnsafeRawBufferPointer(rebasing: inbox[0..<Self.headerRegion]))
        do {
            let (frame, used) = try Frame.decodePrefix(region[...], maxBodyBytes: Self.headerRegion - Frame.headerSize)
            guard frame.kind == ActivationHeader.frameKind else {
                throw MedleyError(.corruption, "expected an \(ActivationHeader.frameKind) frame, got \(frame.kind)")
            }
            guard region[used...].allSatisfy({ $0 == 0 }) else {
                throw MedleyError(.corruption, "bytes after the header frame are not zero")
            }
            return try ActivationHeader(serialized: frame.body)
        } catch let error as MedleyError {
            throw MedleyError(.corruption, "\(what): the header from rank \(peer) is not valid: \(error.message)")
        }
    }

    /// Polls for the next message from the peer until it arrives; returns its size in bytes.
    private func waitForMessage(timeoutSeconds: Double, what: String) throws -> Int {
        try Communicator.poll(
            timeoutSeconds: timeoutSeconds,
            timeout: "\(what): nothing from rank \(peer) within \(Communicator.format(timeoutSeconds)) s; the neighbouring stage is hung or far slower"
        ) {
            var flag: Int32 = 0
            var status = MPI_Status()
            try mpiCheck(MPI_Iprobe(Int32(peer), receiveTag, communicator.handle, &flag, &status), "MPI_Iprobe")
            if flag != 0 {
                var count: Int32 = 0
                try mpiCheck(MPI_Get_count(&status, CMPI_byte(), &count), "MPI_Get_count")
                return Int(count)
            }
            try reclaim()
            return nil
        }
    }
}
