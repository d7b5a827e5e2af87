import CMPI
import Foundation
import MedleyCore

/// The point-to-point link from one pipeline stage to a neighbour: activations go forward,
/// their gradients come back, each as an ``ActivationHeader`` frame followed by its payload,
/// through host memory (neighbours may be chips of different vendors).
///
/// Sends never block: each message is copied into a buffer the link owns and posted with
/// `MPI_Isend`, so two neighbours sending to each other at once cannot deadlock; finished
/// sends are reclaimed as later calls poll them. Receives wait with a deadline, sleeping
/// between polls, and check the header against what the schedule expects: a message for
/// the wrong step, microbatch, stage, shape or type is a named error, never a silent mix-up
/// or a hang.
public final class StageLink {
    /// The communicator both stages belong to.
    public let communicator: Communicator
    /// The neighbour's rank in `communicator`.
    public let peer: Int
    /// Tag of the messages this link sends, and of those it receives.
    let sendTag: Int32
    let receiveTag: Int32
    /// Posted sends and the bytes they read from.
    private var pending: [(request: MPI_Request?, bytes: UnsafeMutableRawBufferPointer)] = []

    /// Tag of activations (stage s → s + 1).
    public static let activationTag = 1_101
    /// Tag of activation gradients (stage s + 1 → s).
    public static let gradientTag = 1_102

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
        // Only reached with sends still posted when the job is failing; MPI may still read
        // the bytes, so they are left allocated rather than freed under it.
        for send in pending where send.request == nil { send.bytes.deallocate() }
    }

    /// Posts `header` (its payload size and checksum filled in) and `payload` to the peer.
    public func send(_ header: ActivationHeader, payload: UnsafeRawBufferPointer, checksum: Bool = false) throws {
        var header = header
        guard payload.count == header.payloadBytes else {
            throw MedleyError(.invalidArgument, "stage link: payload is \(payload.count) bytes, its header says \(header.payloadBytes)")
        }
        header.checksum = checksum ? Checksum.hash64(Array(payload)) | 1 : 0
        try reclaim()
        let frame = header.framed()
        try frame.withUnsafeBytes { try post($0) }
        try post(payload)
    }

    /// Receives the next message from the peer into `payload`, waiting at most `timeoutSeconds`.
    ///
    /// The header must match `expected` in step, microbatch, sending stage, shape and dtype;
    /// `what` names the wait in errors (e.g. "step 3: stage 1 waiting for microbatch 2's activation").
    /// - Returns: seconds spent waiting for the message to arrive.
    @discardableResult
    public func receive(
        expected: ActivationHeader, into payload: UnsafeMutableRawBufferPointer, timeoutSeconds: Double, what: String
    ) throws -> Double {
        let waited = try waitForMessage(timeoutSeconds: timeoutSeconds, what: what)
        let header = try communicator.receiveFramed(ActivationHeader.self, from: peer, tag: Int(receiveTag))
        let mismatch: String? =
            header.step != expected.step ? "step \(header.step)"
            : header.microbatch != expected.microbatch ? "microbatch \(header.microbatch)"
            : header.stage != expected.stage ? "stage \(header.stage)"
            : header.shape != expected.shape ? "shape \(header.shape)"
            : header.dtype != expected.dtype ? "dtype \(header.dtype)"
            : header.payloadBytes != payload.count ? "\(header.payloadBytes) payload bytes" : nil
        if let mismatch {
            throw MedleyError(
                .mismatch,
                "\(what): rank \(peer) sent \(mismatch), expected step \(expected.step) microbatch \(expected.microbatch) from stage \(expected.stage), shape \(expected.shape) \(expected.dtype) (the two stages disagree on the plan or the schedule)")
        }
        _ = try waitForMessage(timeoutSeconds: timeoutSeconds, what: what)
        let typed = payload.bindMemory(to: UInt8.self)
        let count = try communicator.receive(into: typed, from: peer, tag: Int(receiveTag))
        guard count == payload.count else {
            throw MedleyError(.corruption, "\(what): rank \(peer) sent \(count) payload bytes, its header announced \(payload.count)")
        }
        if header.checksum != 0, Checksum.hash64(Array(UnsafeRawBufferPointer(payload))) | 1 != header.checksum {
            throw MedleyError(.corruption, "\(what): the payload from rank \(peer) fails its checksum")
        }
        return waited
    }

    /// Waits until every posted send has completed (at most `timeoutSeconds`).
    public func finishSends(timeoutSeconds: Double, what: String) throws {
        let start = MPI_Wtime()
        var polls = 0
        while true {
            try reclaim()
            if pending.isEmpty { return }
            if MPI_Wtime() - start > timeoutSeconds {
                throw MedleyError(
                    .timeout, "\(what): rank \(peer) did not take \(pending.count) message(s) within \(Communicator.format(timeoutSeconds)) s; it is hung or far behind")
            }
            polls += 1
            Communicator.pause(afterPolls: polls)
        }
    }

    // MARK: Internals

    private func post(_ bytes: UnsafeRawBufferPointer) throws {
        let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes.count, 1), alignment: 16)
        if bytes.count > 0 { copy.copyMemory(from: bytes) }
        var request: MPI_Request? = nil
        let status = MPI_Isend(
            copy.baseAddress, Int32(bytes.count), CMPI_byte(), Int32(peer), sendTag, communicator.handle, &request)
        if status != CMPI_success() {
            copy.deallocate()
            try mpiCheck(status, "MPI_Isend to rank \(peer)")
        }
        pending.append((request, copy))
    }

    /// Frees the buffers of sends that have completed.
    private func reclaim() throws {
        var kept: [(request: MPI_Request?, bytes: UnsafeMutableRawBufferPointer)] = []
        for var send in pending {
            var done: Int32 = 0
            try mpiCheck(MPI_Test(&send.request, &done, CMPI_status_ignore()), "MPI_Test (send to rank \(peer))")
            if done != 0 { send.bytes.deallocate() } else { kept.append(send) }
        }
        pending = kept
    }

    /// Polls for the next message from the peer until it arrives; returns seconds waited.
    private func waitForMessage(timeoutSeconds: Double, what: String) throws -> Double {
        let start = MPI_Wtime()
        var polls = 0
        while true {
            var flag: Int32 = 0
            try mpiCheck(
                MPI_Iprobe(Int32(peer), receiveTag, communicator.handle, &flag, CMPI_status_ignore()), "MPI_Iprobe")
            if flag != 0 { return MPI_Wtime() - start }
            try reclaim()
            if MPI_Wtime() - start > timeoutSeconds {
                throw MedleyError(
                    .timeout,
                    "\(what): nothing from rank \(peer) within \(Communicator.format(timeoutSeconds)) s; the neighbouring stage is hung or far slower")
            }
            polls += 1
            Communicator.pause(afterPolls: polls)
        }
    }
}
