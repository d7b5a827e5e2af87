// libFuzzer target over every decoder a Medley rank runs on a peer's bytes:
// the frame header (`Frame.decode`, `Frame.decodePrefix` as the stage link uses it) and
// the protobuf-c message decoders behind `FramedMessage` (bucket header, bucket layout
// header, activation header), and the control channel's streaming frame decoder
// (`ControlFrameDecoder`, what the supervisor runs on every connection's bytes).
//
// The first input byte picks what the rest is fed to, so one corpus reaches past the
// frame's CRC (modes that wrap the rest in a valid frame) as well as into the header checks.
// Besides "no crash, no ASan report", every accepted input must round-trip: a decoded
// frame re-encodes to the very bytes it came from, and a decoded message re-serializes
// to bytes that decode to an equal message. A violation stops the run (a finding).
//
// Build and run: scripts/fuzz.sh [SECONDS]
#if canImport(Glibc)
import Glibc
#endif
import MedleyComm
import MedleyControl
import MedleyCore

/// What the first input byte selects; the remaining bytes are the case's input.
enum FuzzMode: UInt8, CaseIterable {
    /// The bytes as one whole frame, then as the message of its kind.
    case wholeFrame
    /// The bytes as a frame prefix, with the stage link's header-region limit.
    case framePrefix
    /// The bytes as a serialized `BucketLayoutHeader`.
    case layoutBody
    /// The bytes as a serialized `BucketHeader`.
    case bucketBody
    /// The bytes as a serialized `ActivationHeader`.
    case activationBody
    /// The bytes (after a kind byte) wrapped in a valid frame, through `init(framed:)`.
    case validFrameAroundBody
    /// The bytes as a control-channel stream (after a chunk-size byte), fed in chunks to a
    /// `ControlFrameDecoder` with the seed token; every decoded message must re-encode and decode equal.
    case controlStream
}

/// The control token the seeds carry.
let fuzzControlToken: [UInt8] = Array(0..<16)

/// Feeds `rest` to a control decoder in chunks; accepted messages must round-trip.
func decodeControlStream(_ rest: [UInt8]) {
    guard let chunkByte = rest.first else { return }
    let stream = Array(rest.dropFirst())
    let chunk = Int(chunkByte) + 1
    var decoder = ControlFrameDecoder(token: fuzzControlToken, maxFrameBytes: 4096)
    var results = 0
    var i = 0
    while i < stream.count {
        decoder.append(Array(stream[i..<min(stream.count, i + chunk)]))
        i += chunk
        while let r = decoder.next() {
            results += 1
            if case .message(let m) = r {
                var again = ControlFrameDecoder(token: fuzzControlToken)
                again.append(ControlWire.encode(m, token: fuzzControlToken))
                let back = again.next()
                // NaN losses are allowed and never compare equal: compare the encodings instead.
                if back != .message(m) {
                    guard case .message(let m2) = back,
                          ControlWire.encode(m2, token: fuzzControlToken) == ControlWire.encode(m, token: fuzzControlToken)
                    else { finding("control message does not round-trip: \(m) vs \(String(describing: back))") }
                }
            }
        }
    }
    guard decoder.decoded + decoder.dropped.values.reduce(0, +) == results else { finding("control decoder miscounts") }
    if decoder.isPoisoned, decoder.next() != nil { finding("a poisoned control decoder yielded a frame") }
}

/// Stops the run with a message libFuzzer reports as a crash, saving the input.
func finding(_ message: String) -> Never {
    fatalError("fuzz finding: \(message)")
}

/// Decodes `body` as `M`; an accepted message must survive serialize → decode unchanged.
func decodeMessage<M: FramedMessage & Equatable>(_: M.Type, serialized body: [UInt8]) {
    guard let message = rejectsOnlyWithMedleyError({ try M(serialized: body) }) else { return }
    let again = rejectsOnlyWithMedleyError { try M(serialized: message.serialized()) }
    guard again == message else { finding("\(M.self) does not round-trip: \(message) vs \(String(describing: again))") }
}

/// Decodes framed `bytes` as `M`; an accepted message must re-frame and decode unchanged.
func decodeFramed<M: FramedMessage & Equatable>(_: M.Type, framed bytes: [UInt8]) {
    guard let message = rejectsOnlyWithMedleyError({ try M(framed: bytes) }) else { return }
    let again = rejectsOnlyWithMedleyError { try M(framed: message.framed()) }
    guard again == message else { finding("framed \(M.self) does not round-trip") }
}

/// Runs a decoder: its value, or nil when it refused the input with a corruption error.
/// Any other error is a finding: decoders of peer bytes only ever report corruption.
func rejectsOnlyWithMedleyError<T>(_ decode: () throws -> T) -> T? {
    do {
        return try decode()
    } catch let error as MedleyError {
        guard error.code == .corruption else { finding("decoder threw \(error.code), not corruption: \(error)") }
        return nil
    } catch {
        finding("decoder threw a non-Medley error: \(error)")
    }
}

/// Feeds a decoded frame's body to the message decoder of its kind (the profile kinds are
/// decoded outside MedleyComm's wire path and are not fuzzed here).
func decodeBody(of frame: Frame) {
    switch frame.kind {
    case .bucketHeader: decodeMessage(BucketHeader.self, serialized: frame.body)
    case .bucketLayoutHeader: decodeMessage(BucketLayoutHeader.self, serialized: frame.body)
    case .activationHeader: decodeMessage(ActivationHeader.self, serialized: frame.body)
    case .deviceProfile, .networkProfile: break
    }
}

/// One fuzz case.
func fuzzOne(_ input: [UInt8]) {
    guard let first = input.first else { return }
    let mode = FuzzMode.allCases[Int(first) % FuzzMode.allCases.count]
    let rest = Array(input.dropFirst())
    switch mode {
    case .wholeFrame:
        guard let frame = rejectsOnlyWithMedleyError({ try Frame.decode(rest) }) else { return }
        guard frame.encoded() == rest else { finding("an accepted frame does not re-encode to its bytes") }
        decodeBody(of: frame)
    case .framePrefix:
        let limit = StageLink.headerRegion - Frame.headerSize
        guard let decoded = rejectsOnlyWithMedleyError({ try Frame.decodePrefix(rest[...], maxBodyBytes: limit) }) else { return }
        let (frame, used) = decoded
        guard used == Frame.headerSize + frame.body.count, used <= rest.count, frame.body.count <= limit else {
            finding("decodePrefix used \(used) bytes for a \(frame.body.count)-byte body of \(rest.count) offered")
        }
        guard frame.encoded() == Array(rest[0..<used]) else { finding("an accepted frame prefix does not re-encode to its bytes") }
        decodeBody(of: frame)
    case .layoutBody:
        decodeMessage(BucketLayoutHeader.self, serialized: rest)
    case .bucketBody:
        decodeMessage(BucketHeader.self, serialized: rest)
    case .activationBody:
        decodeMessage(ActivationHeader.self, serialized: rest)
    case .validFrameAroundBody:
        guard let kindByte = rest.first, let kind = Frame.Kind(rawValue: kindByte % 3 + 1) else { return }
        let bytes = Frame(kind: kind, body: Array(rest.dropFirst())).encoded()
        switch kind {
        case .bucketHeader: decodeFramed(BucketHeader.self, framed: bytes)
        case .bucketLayoutHeader: decodeFramed(BucketLayoutHeader.self, framed: bytes)
        default: decodeFramed(ActivationHeader.self, framed: bytes)
        }
    case .controlStream:
        decodeControlStream(rest)
    }
}

// MARK: - Seeds

/// Valid inputs for every mode, built from real messages: the seed corpus.
func seedInputs() -> [(name: String, bytes: [UInt8])] {
    let tensors = [
        TensorMeta(name: "h.0.attn.w", shape: [64, 128], dtype: .float32),
        TensorMeta(name: "h.0.attn.b", shape: [128], dtype: .float32, byteOffset: 32768),
    ]
    let bucket = BucketHeader(jobID: "seed", step: 3, bucketIndex: 1, tensors: tensors, payloadBytes: 33280,
                              sampleCount: 12, checksum: 0xDEAD_BEEF)
    let layout = BucketLayoutHeader(
        jobID: "seed", step: 3,
        buckets: [bucket, BucketHeader(jobID: "seed", step: 3, bucketIndex: 2,
                                       tensors: [TensorMeta(name: "head.w", shape: [10, 3, 3], dtype: .bfloat16)],
                                       payloadBytes: 180, sampleCount: 12)],
        fingerprint: 0x1234_5678_9ABC_DEF0, sampleCount: 12)
    let activation = ActivationHeader(step: 7, microbatch: 2, stage: 1, shape: [4, 16, 32], dtype: .float16, checksum: 99)
    func mode(_ m: FuzzMode) -> [UInt8] { [m.rawValue] }
    var region = activation.framed()
    region += [UInt8](repeating: 0, count: StageLink.headerRegion - region.count)
    return [
        ("frame-layout", mode(.wholeFrame) + layout.framed()),
        ("frame-bucket", mode(.wholeFrame) + bucket.framed()),
        ("frame-activation", mode(.wholeFrame) + activation.framed()),
        ("prefix-activation-region", mode(.framePrefix) + region),
        ("body-layout", mode(.layoutBody) + layout.serialized()),
        ("body-bucket", mode(.bucketBody) + bucket.serialized()),
        ("body-activation", mode(.activationBody) + activation.serialized()),
        ("wrapped-bucket", mode(.validFrameAroundBody) + [0] + bucket.serialized()),
        ("wrapped-layout", mode(.validFrameAroundBody) + [1] + layout.serialized()),
        ("wrapped-activation", mode(.validFrameAroundBody) + [2] + activation.serialized()),
        ("control-stream", mode(.controlStream) + [6] + controlSeedStream()),
    ]
}

/// One of each control message, framed with the seed token.
func controlSeedStream() -> [UInt8] {
    let messages: [ControlMessage] = [
        .hello(ControlHello(rank: 1, adapter: "sim", vendor: "Medley", chip: "sim-x", host: "node-1", pid: 77,
                            memoryBytes: 1 << 30)),
        .heartbeat(ControlHeartbeat(rank: 1, step: 5, loss: 2.5, tokensPerSecond: 900, deviceMemoryUsedBytes: 1 << 20,
                                    health: .ok)),
        .stepReport(ControlStepReport(rank: 1, step: 5, loss: 2.5, tokensPerSecond: 900, stepMs: 12, computeMs: 9, idleMs: 1,
                                      exchangeMs: 2, share: 8, validationLoss: 2.75)),
        .faultReport(ControlFaultReport(rank: 1, step: 5, kind: .adapterError, message: "device lost")),
        .command(ControlCommand(kind: .checkpointNow, reason: "operator")),
    ]
    return messages.flatMap { ControlWire.encode($0, token: fuzzControlToken) }
}

/// With `MEDLEY_FUZZ_WRITE_SEEDS=DIR` in the environment, writes the seed corpus to DIR
/// and exits instead of fuzzing (scripts/fuzz.sh uses it to refresh FuzzTesting/corpus).
@_cdecl("LLVMFuzzerInitialize")
public func fuzzerInitialize(_ argc: UnsafeMutablePointer<CInt>?, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?) -> CInt {
    guard let dir = getenv("MEDLEY_FUZZ_WRITE_SEEDS").map({ String(cString: $0) }) else { return 0 }
    for seed in seedInputs() {
        // Every seed must itself pass the harness's checks.
        fuzzOne(seed.bytes)
        let path = "\(dir)/\(seed.name)"
        guard let file = fopen(path, "wb") else { finding("cannot write seed \(path)") }
        _ = seed.bytes.withUnsafeBufferPointer { fwrite($0.baseAddress, 1, $0.count, file) }
        fclose(file)
    }
    print("wrote \(seedInputs().count) seeds to \(dir)")
    exit(0)
}

// MARK: - Entry point

/// libFuzzer's entry point: one input, decoded every way its first byte selects.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    fuzzOne(count == 0 ? [] : Array(UnsafeBufferPointer(start: data, count: count)))
    return 0
}
