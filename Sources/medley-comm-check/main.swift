// medley-comm-check: multi-rank scenarios for MedleyComm's tests, run under mpirun.
//
//   mpirun -np N medley-comm-check SCENARIO [ARGS]
//
// Every rank prints "rank R: ok <scenario>" on success. An error raised collectively
// (mismatch, corruption, invalid argument) is printed by every rank as
// "rank R: error [code]: message", after which MPI is finalized and the rank exits 3.
// Any other failure aborts the whole job (MPI_Abort), so a lone failing rank never
// leaves the others waiting.
import Foundation
import MedleyBench
import MedleyComm
import MedleyCore

/// Prints a line and flushes at once, so a rank's words reach mpirun before it exits.
func say(_ line: String) {
    print(line)
    fflush(nil)
}

struct CheckFailure: Error, CustomStringConvertible {
    var description: String
}

func expect(_ condition: Bool, _ message: @autoclosure () -> String) throws {
    if !condition { throw CheckFailure(description: message()) }
}

/// Deterministic test gradient of rank `rank` at `step` for tensor `t`, element `j`.
func gradientValue(rank: Int, step: Int, tensor t: Int, index j: Int) -> Float {
    var h = UInt64(truncatingIfNeeded: rank &* 1_000_003 &+ step &* 7919 &+ t &* 104_729 &+ j)
    h = (h ^ (h >> 33)) &* 0xFF51_AFD7_ED55_8CCD
    h ^= h >> 33
    return Float(Int(h % 2001) - 1000) / 250.0  // in [-4, 4]
}

let testTensors: [TensorMeta] = [
    TensorMeta(name: "embed.w", shape: [37, 16], dtype: .float32),
    TensorMeta(name: "h.0.attn.w", shape: [64, 128], dtype: .float32),
    TensorMeta(name: "h.0.attn.b", shape: [128], dtype: .float32),
    TensorMeta(name: "h.1.attn.w", shape: [64, 128], dtype: .float32),
    TensorMeta(name: "h.1.mlp.w", shape: [301, 7], dtype: .float32),
    TensorMeta(name: "head.b", shape: [3], dtype: .float32),
]

/// Sample counts per step and rank: uneven, with zeros (but never all zero).
func sampleCount(rank: Int, step: Int, size: Int) -> Int {
    let patterns = [[5, 0, 2, 7], [1, 2, 3, 4], [0, 3, 0, 1], [8, 8, 8, 8]]
    return patterns[step % patterns.count][rank % 4]
}

func fill(_ exchange: GradientExchange, tensors: [TensorMeta], rank: Int, step: Int) throws {
    for (t, meta) in tensors.enumerated() {
        try exchange.withGradient(named: meta.name) { g in
            for j in 0..<g.count { g[j] = gradientValue(rank: rank, step: step, tensor: t, index: j) }
        }
    }
}

/// Weighted averaging against a single-process reference (every rank recomputes all inputs).
func weighted(_ world: Communicator, options: GradientExchange.Options, cap: Int, steps: Int = 4) throws {
    let layout = try BucketLayout(tensors: testTensors, capBytes: cap, jobID: "check")
    let exchange = try GradientExchange(communicator: world, layout: layout, options: options)
    for step in 0..<steps {
        try fill(exchange, tensors: testTensors, rank: world.rank, step: step)
        let n = sampleCount(rank: world.rank, step: step, size: world.size)
        let report = try exchange.exchange(step: UInt64(step), sampleCount: n)
        try expect(report.negotiated == (step == 0), "step \(step): negotiated=\(report.negotiated)")
        let counts = (0..<world.size).map { sampleCount(rank: $0, step: step, size: world.size) }
        try expect(report.samplesPerRank == counts.map(UInt64.init), "sample counts \(report.samplesPerRank) vs \(counts)")
        let total = Double(counts.reduce(0, +))
        for (t, meta) in testTensors.enumerated() {
            let got = try exchange.gradient(named: meta.name)
            for j in 0..<got.count {
                var exact = 0.0
                for q in 0..<world.size {
                    exact += Double(counts[q]) * Double(gradientValue(rank: q, step: step, tensor: t, index: j))
                }
                exact /= total
                let tolerance = 4e-6 * 4.0 + 1e-6 * abs(exact)
                try expect(abs(Double(got[j]) - exact) <= tolerance,
                           "step \(step) tensor \(meta.name)[\(j)]: \(got[j]) vs reference \(exact)")
            }
        }
    }
}

/// Two neighbouring stages: activations forward, gradients back, both directions at once
/// with payloads far above the eager limit (non-blocking sends must not deadlock); then a
/// wrong microbatch, or silence, must be a named error.
func stageLink(_ world: Communicator, scenario: String) throws {
    let rank = world.rank
    let peer = 1 - rank
    let link = try StageLink(
        communicator: world, peer: peer, sendTag: rank == 0 ? StageLink.activationTag : StageLink.gradientTag,
        receiveTag: rank == 0 ? StageLink.gradientTag : StageLink.activationTag)
    let shape = [4, 64, 1024]  // 1 MiB of floats
    let count = shape.reduce(1, *)
    var received = [Float](repeating: 0, count: count)
    if scenario == "stage-link-timeout" {
        if rank == 1 {
            try received.withUnsafeMutableBytes { raw in
                try link.receive(
                    expected: ActivationHeader(step: 0, microbatch: 0, stage: 0, shape: shape, dtype: .float32), into: raw,
                    timeoutSeconds: 1, what: "stage 1 waiting for microbatch 0")
            }
        }
        return
    }
    for microbatch in 0..<3 {
        let sentMicrobatch = scenario == "stage-link-mismatch" && rank == 0 && microbatch == 1 ? 2 : microbatch
        let values = (0..<count).map { Float(rank * 1_000_000 + microbatch * 1000 + $0 % 997) }
        try values.withUnsafeBytes { raw in
            try link.send(
                ActivationHeader(step: 7, microbatch: sentMicrobatch, stage: rank, shape: shape, dtype: .float32), payload: raw,
                checksum: true)
        }
        try received.withUnsafeMutableBytes { raw in
            try link.receive(
                expected: ActivationHeader(step: 7, microbatch: microbatch, stage: peer, shape: shape, dtype: .float32), into: raw,
                timeoutSeconds: scenario == "stage-link" ? 10 : 3, what: "stage \(rank) waiting for microbatch \(microbatch)")
        }
        let expected = (0..<count).map { Float(peer * 1_000_000 + microbatch * 1000 + $0 % 997) }
        try expect(received == expected, "microbatch \(microbatch): the payload from rank \(peer) differs")
    }
    try link.finishSends(timeoutSeconds: 10, what: "finishing")
}

func collectives(_ world: Communicator) throws {
    let level = try MPIRuntime.providedLevel()
    let r = world.rank, p = world.size
    try expect(try world.allreduce([Float(r + 1)], op: .sum) == [Float(p * (p + 1) / 2)], "allreduce sum")
    try expect(try world.allreduce([Int32(r)], op: .min) == [0], "allreduce min")
    try expect(try world.allreduce([Double(r)], op: .max) == [Double(p - 1)], "allreduce max")
    try expect(try world.allreduce([UInt64(0xFF) ^ (1 << UInt64(r))], op: .bitwiseAnd)
               == [UInt64(0xFF) & ~UInt64((1 << p) - 1)], "allreduce band")
    try expect(try world.allgather([Int64(r), Int64(-r)]) == (0..<p).flatMap { [Int64($0), Int64(-$0)] }, "allgather")
    let v = try world.allgatherv([UInt8](repeating: UInt8(r), count: r))
    try expect(v == (0..<p).map { [UInt8](repeating: UInt8($0), count: $0) }, "allgatherv")
    try expect(try world.broadcast(r == p - 1 ? [1.5, 2.5] : [Double](), root: p - 1) == [1.5, 2.5], "broadcast")
    try world.barrier()
    // Split: even/odd groups, then a group of none for the last rank.
    let parity = try world.split(color: r % 2, key: r)!
    try expect(parity.size == (p + 1 - r % 2) / 2 && parity.rank == r / 2, "split parity \(parity)")
    try expect(try parity.allreduce([Int32(1)], op: .sum) == [Int32(parity.size)], "split allreduce")
    try parity.free()
    let some = try world.split(color: r == p - 1 ? nil : 0)
    try expect((some == nil) == (r == p - 1), "split with undefined color")
    try some?.free()
    // Point to point: a ring of framed activations with checksums.
    let right = (r + 1) % p, left = (r + p - 1) % p
    let header = ActivationHeader(step: 9, microbatch: r, stage: r, shape: [2, 3], dtype: .float32)
    let payload = (0..<24).map { UInt8(($0 + r) & 0xFF) }
    if r % 2 == 0 {
        try world.sendActivation(header, payload: payload, to: right, tag: 5, checksum: true)
        let (h, bytes) = try world.receiveActivation(from: left, tag: 5, maxPayloadBytes: header.payloadBytes)
        try expect(h.stage == left && bytes == (0..<24).map { UInt8(($0 + left) & 0xFF) }, "activation from \(left)")
    } else {
        let (h, bytes) = try world.receiveActivation(from: left, tag: 5, maxPayloadBytes: header.payloadBytes)
        try expect(h.stage == left && bytes == (0..<24).map { UInt8(($0 + left) & 0xFF) }, "activation from \(left)")
        try world.sendActivation(header, payload: payload, to: right, tag: 5, checksum: true)
    }
    // A bad frame sent point to point is an error at the receiver, not a crash.
    if p >= 2 {
        if r == 0 { try world.send([UInt8](repeating: 0xAB, count: 40), to: 1, tag: 6) }
        if r == 1 {
            do {
                _ = try world.receiveFramed(BucketHeader.self, from: 0, tag: 6)
                throw CheckFailure(description: "garbage frame accepted")
            } catch let e as MedleyError where e.code == .corruption {}
        }
    }
    // An MPI failure is a thrown error carrying MPI_Error_string's text.
    do {
        try world.send([Int32(1)], to: p + 5)
        throw CheckFailure(description: "send to a bad rank did not throw")
    } catch let e as MedleyError where e.code == .invalidArgument {}
    say("rank \(r): thread level \(level)")
}

/// A peer announces an activation far larger than the schedule ever sends (and sends it):
/// the receiver must refuse the claim before sizing a buffer from it. Rank 0 is then stuck
/// in its send, so rank 1 reports the error and aborts the job, as a real worker would.
func activationClaim(_ world: Communicator) throws {
    let scheduled = ActivationHeader(step: 9, microbatch: 0, stage: 0, shape: [2, 3], dtype: .float32)
    if world.rank == 0 {
        let claimed = ActivationHeader(step: 9, microbatch: 0, stage: 0, shape: [16_384, 1024], dtype: .float32)
        try world.sendActivation(claimed, payload: [UInt8](repeating: 0, count: claimed.payloadBytes), to: 1, tag: 5)
    } else if world.rank == 1 {
        do {
            let (h, _) = try world.receiveActivation(from: 0, tag: 5, maxPayloadBytes: scheduled.payloadBytes)
            throw CheckFailure(description: "accepted a \(h.payloadBytes)-byte activation where the schedule sends \(scheduled.payloadBytes) bytes")
        } catch let e as MedleyError where e.code == .corruption {
            say("rank 1: error [\(e.code)]: \(e)")
            MPIRuntime.abort(exitCode: 3)
        }
    }
}

// MARK: - Main

let args = Array(CommandLine.arguments.dropFirst())
guard let scenario = args.first else {
    say("usage: medley-comm-check SCENARIO   (collectives, weighted, weighted-ring, mismatch, mismatch-later, mismatch-dtype, checksum-clean, checksum-result, checksum-contribution, zero-batch, negative-samples, corrupt-samples, activation-claim, weighted-doubling, bench ...)")
    exit(2)
}

if scenario == "bench" {
    // medley-comm-check bench [--ranks N] [--json FILE] [--max-size SIZE] [--min-size SIZE]
    var config = AllreduceBenchmark.Configuration()
    var json: String?
    var ranks: Int?
    var child: [String] = ["bench"]
    var i = 1
    do {
        while i < args.count {
            let a = args[i], value = i + 1 < args.count ? args[i + 1] : ""
            switch a {
            case "--ranks": ranks = Int(value); i += 2; continue
            case "--json": json = value
            case "--max-size": config.maxBytes = try ByteCount.parse(value)
            case "--min-size": config.minBytes = try ByteCount.parse(value)
            case "--agreement-steps": config.agreementSteps = Int(value) ?? 2000
            case "--blocks": config.blocks = Int(value) ?? 3
            case "--segment-size": config.options.segmentBytes = try ByteCount.parse(value)
            case "--ring-threshold": config.options.ringThresholdBytes = try ByteCount.parse(value)
            case "--doubling-threshold": config.options.doublingThresholdBytes = try ByteCount.parse(value)
            case "--checksums": config.options.checksums = true; child.append(a); i += 1; continue
            default: throw MedleyError(.invalidArgument, "unknown option \(a)")
            }
            child += [a, value]
            i += 2
        }
        exit(try AllreduceBenchmark.runCommand(ranks: ranks, jsonPath: json, configuration: config, childArguments: child))
    } catch {
        say("error: \(error)")
        exit(1)
    }
}

let world: Communicator
do {
    try MPIRuntime.initialize(requesting: .funneled)
    world = try Communicator.world()
} catch {
    say("error: \(error)")
    exit(1)
}
let rank = world.rank

do {
    switch scenario {
    case "collectives":
        try collectives(world)
    case "weighted":
        try weighted(world, options: .init(ringThresholdBytes: Int.max), cap: 8 << 10)
    case "weighted-ring":
        // Every bucket through the fused ring, with segments smaller than chunks.
        try weighted(world, options: .init(ringThresholdBytes: 0, segmentBytes: 256), cap: 40 << 10)
    case "weighted-doubling":
        // Every bucket through fused recursive doubling (power-of-two rank counts), else MPI.
        try weighted(world, options: .init(ringThresholdBytes: Int.max, doublingThresholdBytes: 0), cap: 40 << 10)
    case "weighted-single-bucket":
        try weighted(world, options: .init(), cap: 1 << 30)
    case "mismatch", "mismatch-dtype":
        var tensors = testTensors
        if rank == world.size - 1 {
            if scenario == "mismatch" {
                tensors[3].shape = [64, 192]
            } else {
                tensors[2].dtype = .float16
            }
        }
        let exchange = try GradientExchange(communicator: world, layout: try BucketLayout(tensors: tensors, capBytes: 16 << 10, jobID: "check"))
        try exchange.exchange(step: 0, sampleCount: 1)
        throw CheckFailure(description: "a mismatched layout was not detected")
    case "mismatch-later":
        let layout = try BucketLayout(tensors: testTensors, capBytes: 16 << 10, jobID: "check")
        let exchange = try GradientExchange(communicator: world, layout: layout)
        for step in 0..<3 { try exchange.exchange(step: UInt64(step), sampleCount: 2) }
        if rank == 0 {
            // A re-plan on one rank only: renamed tensor.
            var tensors = testTensors
            tensors[4].name = "h.1.mlp.w_renamed"
            exchange.setLayout(try BucketLayout(tensors: tensors, capBytes: 16 << 10, jobID: "check"))
        }
        try exchange.exchange(step: 3, sampleCount: 2)
        throw CheckFailure(description: "a layout changed on one rank was not detected")
    case "checksum-clean":
        try weighted(world, options: .init(checksums: true, ringThresholdBytes: 16 << 10, segmentBytes: 4 << 10), cap: 40 << 10)
    case "checksum-result", "checksum-contribution":
        let layout = try BucketLayout(tensors: testTensors, capBytes: 40 << 10, jobID: "check")
        let exchange = try GradientExchange(communicator: world, layout: layout, options: .init(checksums: true, ringThresholdBytes: 16 << 10))
        try fill(exchange, tensors: testTensors, rank: rank, step: 0)
        try exchange.exchange(step: 0, sampleCount: 3)
        exchange.faultInjection = GradientExchange.FaultInjection(
            rank: world.size - 1, bucket: 1, element: 77, bit: scenario == "checksum-result" ? 3 : 30,
            point: scenario == "checksum-result" ? .reducedPayload : .contributionAfterChecksum)
        try fill(exchange, tensors: testTensors, rank: rank, step: 1)
        try exchange.exchange(step: 1, sampleCount: 3)
        throw CheckFailure(description: "a corrupted payload was not detected")
    case "negative-samples":
        let exchange = try GradientExchange(communicator: world, layout: try BucketLayout(tensors: testTensors, capBytes: 1 << 20))
        try exchange.exchange(step: 0, sampleCount: rank == 2 ? -1 : 4)
        throw CheckFailure(description: "a negative sample count was accepted")
    case "corrupt-samples":
        // Two ranks announce absurd counts whose sum overflows 64 bits: a named error, not a trap.
        let exchange = try GradientExchange(communicator: world, layout: try BucketLayout(tensors: testTensors, capBytes: 1 << 20))
        try exchange.exchange(step: 0, sampleCount: rank == 1 || rank == 2 ? Int.max : 4)
        throw CheckFailure(description: "an impossible sample count was accepted")
    case "activation-claim":
        try activationClaim(world)
    case "zero-batch":
        let exchange = try GradientExchange(communicator: world, layout: try BucketLayout(tensors: testTensors, capBytes: 1 << 20))
        try exchange.exchange(step: 0, sampleCount: 0)
        throw CheckFailure(description: "a zero global batch was accepted")
    case "stage-link", "stage-link-mismatch", "stage-link-timeout":
        try stageLink(world, scenario: scenario)
    default:
        throw CheckFailure(description: "unknown scenario '\(scenario)'")
    }
    say("rank \(rank): ok \(scenario)")
    try MPIRuntime.finalize()
    exit(0)
} catch let e as MedleyError where [.mismatch, .corruption, .invalidArgument, .unsupported, .timeout].contains(e.code) {
    // Raised on every rank from the same gathered data: finalize together, exit non-zero.
    say("rank \(rank): error [\(e.code)]: \(e)")
    try? MPIRuntime.finalize()
    exit(3)
} catch {
    say("rank \(rank): FAILED: \(error)")
    MPIRuntime.abort(exitCode: 4)
}
