import MedleyCore

extension Communicator {
    /// Sends one framed message (header frame only) to `destination`.
    public func sendFramed<M: FramedMessage>(_ message: M, to destination: Int, tag: Int = 0) throws {
        try send(message.framed(), to: destination, tag: tag)
    }

    /// Receives one framed message of type `M` from `source`; the frame's length is probed and
    /// bounded, and every frame check (magic, version, kind, length, CRC, protobuf) applies.
    public func receiveFramed<M: FramedMessage>(
        _: M.Type, from source: Int, tag: Int = 0, maxBodyBytes: Int = 1 << 20
    ) throws -> M {
        let (bytes, _) = try receive(UInt8.self, from: source, tag: tag, maxCount: Frame.headerSize + maxBodyBytes)
        do {
            return try M(framed: bytes, maxBodyBytes: maxBodyBytes)
        } catch let e as MedleyError {
            throw MedleyError(.corruption, "frame from rank \(source): \(e.message)")
        }
    }

    /// Sends an activation to the next pipeline stage: its header frame, then the payload bytes.
    /// The header's checksum is filled in when `checksum` is true.
    public func sendActivation(
        _ header: ActivationHeader, payload: [UInt8], to destination: Int, tag: Int = 0, checksum: Bool = false
    ) throws {
        guard payload.count == header.payloadBytes else {
            throw MedleyError(.invalidArgument, "activation payload is \(payload.count) bytes, its header says \(header.payloadBytes)")
        }
        var h = header
        h.checksum = checksum ? Checksum.hash64(payload) | 1 : 0
        try sendFramed(h, to: destination, tag: tag)
        try send(payload, to: destination, tag: tag)
    }

    /// Receives an activation sent by ``sendActivation(_:payload:to:tag:checksum:)``: the header
    /// frame first, then exactly the payload it announces, verified against the header's
    /// checksum when it carries one.
    ///
    /// `maxPayloadBytes` is the largest payload the caller's schedule can send here (its
    /// largest activation): the header's claim is checked against it before the payload is
    /// received, so a corrupt header never sizes a buffer. There is no default.
    public func receiveActivation(
        from source: Int, tag: Int = 0, maxPayloadBytes: Int
    ) throws -> (header: ActivationHeader, payload: [UInt8]) {
        let header = try receiveFramed(ActivationHeader.self, from: source, tag: tag)
        try PeerLimits.check(header.payloadBytes, allowed: maxPayloadBytes, peer: source,
                             what: "activation payload bytes (step \(header.step), microbatch \(header.microbatch), shape \(header.shape))")
        let (payload, _) = try receive(UInt8.self, from: source, tag: tag, maxCount: header.payloadBytes)
        guard payload.count == header.payloadBytes else {
            throw MedleyError(.corruption, "activation from rank \(source): \(payload.count) payload bytes arrived, the header announced \(header.payloadBytes)")
        }
        if header.checksum != 0, Checksum.hash64(payload) | 1 != header.checksum {
            throw MedleyError(.corruption, "activation from rank \(source) (step \(header.step), microbatch \(header.microbatch)): payload fails its checksum")
        }
        return (header, payload)
    }
}
