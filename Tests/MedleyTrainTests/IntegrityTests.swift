import Foundation
import MedleyCore
import MedleyTestSupport
import Testing

@testable import MedleyTrain

/// The silent-corruption checks' judgements, without chips or processes.
@Suite("integrity: fingerprints, probe tolerances, when the checks run, the spec")
struct IntegrityLogicTests {
    @Test("fingerprints: all equal agree; a minority is named; with no majority every rank is named")
    func fingerprints() {
        #expect(Integrity.compare(fingerprints: []) == .agree)
        #expect(Integrity.compare(fingerprints: [7]) == .agree)
        #expect(Integrity.compare(fingerprints: [7, 7, 7]) == .agree)
        #expect(Integrity.compare(fingerprints: [7, 9, 7]) == .outliers([1]))
        #expect(Integrity.compare(fingerprints: [9, 7, 7, 7, 8]) == .outliers([0, 4]))
        #expect(Integrity.compare(fingerprints: [7, 9]) == .split([0, 1]))
        #expect(Integrity.compare(fingerprints: [7, 7, 9, 9]) == .split([0, 1, 2, 3]))
        let a: [Float] = [1, 2, 3], b: [Float] = [1, 2, Float(bitPattern: Float(3).bitPattern ^ 1)]
        #expect(Integrity.fingerprint(a) == Integrity.fingerprint(a) && Integrity.fingerprint(a) != Integrity.fingerprint(b))
    }

    @Test("probe tolerances by precision; an answer outside (or not finite) is a suspect; a bad reference judges nobody")
    func probe() {
        #expect(Integrity.tolerance(precision: nil) == 1e-3 && Integrity.tolerance(precision: "fp32") == 1e-3)
        #expect(Integrity.tolerance(precision: "BF16") == 1e-1 && Integrity.tolerance(precision: "fp16") == 2e-2)
        let reference = Integrity.ProbeAnswer(loss: 5.0, gradientNorm: 2.0)
        #expect(!Integrity.outside(.init(loss: 5.004, gradientNorm: 2.001), reference: reference, tolerance: 1e-3).bad)
        #expect(Integrity.outside(.init(loss: 5.01, gradientNorm: 2.0), reference: reference, tolerance: 1e-3).bad)
        #expect(!Integrity.outside(.init(loss: 5.2, gradientNorm: 2.1), reference: reference, tolerance: 1e-1).bad)
        #expect(Integrity.outside(.init(loss: 5.0, gradientNorm: .nan), reference: reference, tolerance: 1e-1).bad)
        #expect(Integrity.outside(.init(loss: .infinity, gradientNorm: 2), reference: reference, tolerance: 1e-1).bad)
        #expect(!Integrity.outside(.init(loss: .nan, gradientNorm: .nan), reference: .init(loss: .nan, gradientNorm: 1), tolerance: 1e-3).bad)
        // A reference gradient of 0: the floor keeps a matching 0 in and a real difference out.
        #expect(!Integrity.outside(.init(loss: 5, gradientNorm: 0), reference: .init(loss: 5, gradientNorm: 0), tolerance: 1e-3).bad)
        let suspects = Integrity.probeSuspects(
            answers: [reference, .init(loss: 9, gradientNorm: 2), .init(loss: 5.3, gradientNorm: 2)],
            references: [reference, reference, reference], tolerances: [1e-3, 1e-3, 1e-1])
        #expect(suspects == [1])
    }

    @Test("chips that agree within the sum of their tolerances need no reference; one chip, a disagreement or a non-finite answer does")
    func agreement() {
        let a = Integrity.ProbeAnswer(loss: 5.0, gradientNorm: 2.0)
        #expect(Integrity.agree(answers: [a, .init(loss: 5.003, gradientNorm: 2.001)], tolerances: [1e-3, 1e-3]))
        #expect(!Integrity.agree(answers: [a, .init(loss: 5.02, gradientNorm: 2.0)], tolerances: [1e-3, 1e-3]))
        #expect(Integrity.agree(answers: [a, .init(loss: 5.3, gradientNorm: 2.1)], tolerances: [1e-3, 1e-1]))
        #expect(!Integrity.agree(answers: [a, .init(loss: 5.0, gradientNorm: .nan)], tolerances: [1e-1, 1e-1]))
        #expect(!Integrity.agree(answers: [a], tolerances: [1e-1]))
        #expect(!Integrity.agree(answers: [a, a, .init(loss: 50, gradientNorm: 2)], tolerances: [1e-3, 1e-3, 1e-3]))
    }

    @Test("the probe runs every probe_every steps and before every checkpoint; 0 turns each off")
    func due() {
        let i = JobSpec.Integrity(checksumEvery: 1, fingerprintEvery: 4, probeEvery: 3)
        #expect(Integrity.due(step: 3, integrity: i, checkpoint: false) == (true, false))
        #expect(Integrity.due(step: 4, integrity: i, checkpoint: false) == (false, true))
        #expect(Integrity.due(step: 5, integrity: i, checkpoint: false) == (false, false))
        #expect(Integrity.due(step: 5, integrity: i, checkpoint: true) == (true, true))
        let off = JobSpec.Integrity(checksumEvery: 0, fingerprintEvery: 0, probeEvery: 0)
        #expect(Integrity.due(step: 6, integrity: off, checkpoint: true) == (false, false))
    }

    @Test("integrity: keys parse, round-trip, default on; bad values are one line naming the key")
    func spec() throws {
        let job = try JobSpec.parse(yaml: "devices: [cpu]\nintegrity: {checksum_every: 0, fingerprint_every: 5, probe_every: 0, probe_tolerance: 0.05}\n")
        #expect(job.integrity == JobSpec.Integrity(checksumEvery: 0, fingerprintEvery: 5, probeEvery: 0, probeTolerance: 0.05))
        #expect(try JobSpec.parse(yaml: try job.yamlString()) == job)
        #expect(try JobSpec.parse(yaml: "devices: [cpu]").integrity == JobSpec.Integrity())
        #expect(JobSpec.defaultJob.integrity.checksumEvery > 0 && JobSpec.defaultJob.integrity.probeEvery > 0)
        for (yaml, words) in [
            ("integrity: {probe_every: -1}", "integrity.probe_every: must be 0"),
            ("integrity: {fingerprint_every: -2}", "integrity.fingerprint_every: must be 0"),
            ("integrity: {probe_tolerance: 0}", "integrity.probe_tolerance: must be"),
            ("integrity: {probe_tolerance: 2}", "integrity.probe_tolerance: must be"),
            ("integrity: {checksum_every: maybe}", "integrity.checksum_every"),
            ("integrity: {checksum_every: -1}", "integrity.checksum_every: must be 0"),
            ("integrity: {probe: 3}", "integrity.probe: unknown key"),
        ] {
            do {
                try JobSpec.parse(yaml: "devices: [cpu]\n" + yaml + "\n").validate()
                Issue.record("accepted \(yaml)")
            } catch let error as MedleyError {
                #expect(error.message.contains(words) && !error.message.contains("\n"), "\(yaml): \(error.message)")
            }
        }
    }
}

/// The checks in a real data-parallel run under mpirun.
@Suite("integrity under mpirun", .serialized)
struct IntegrityTests {
    /// Shares are pinned: a chip given no share computes only its optimizer shard (see
    /// docs/integrity.md, "What it does not catch"), and the warm-up on a busy host may give it none.
    static func job(_ chip: String, probeEvery: Int = 2, steps: Int = 6) -> String {
        """
        name: integrity
        model: {layers: 1, dim: 16, heads: 2, seq: 16, batch: 4}
        train: {steps: \(steps), eval_every: 0, rebalance_every: 0, shares: [2, 2]}
        devices:
          - adapter: reference
          - adapter: sim
            options: \(chip)
        integrity: {probe_every: \(probeEvery), fingerprint_every: 1, checksum_every: 1}

        """
    }

    static func train(_ yaml: String) throws -> TestSupport.ProcessResult {
        let dir = try TestSupport.temporaryDirectory("medley-integrity")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try yaml.write(toFile: dir + "/job.yaml", atomically: true, encoding: .utf8)
        return try TestSupport.medley(["train", dir + "/job.yaml", "--timeout", "120"], timeout: 180)
    }

    @Test("a defective sim chip is caught at the step its defect starts, by the probe, and named in one line")
    func defectNamed() throws {
        let result = try Self.train(Self.job("{vendor: Acme, name: defective, fault: 'corrupt@step=3'}"))
        #expect(result.status != 0)
        let line = result.stderr.split(separator: "\n").first { $0.contains("silent corruption") }.map(String.init) ?? ""
        #expect(line.contains("step 3: silent corruption: on the probe batch rank 1 (sim defective)"), "\(result.output)")
        #expect(line.contains("rank 1 (sim defective) computes wrong numbers") && !line.contains("rank 0 (reference"), "\(line)")
        #expect(!result.stdout.contains("step 3/6"), "the corrupted step is not recorded: \(result.stdout)")
    }

    @Test("a defect whose loss stays finite is caught by the next periodic probe", arguments: [4])
    func defectLater(_ probeEvery: Int) throws {
        // The defect starts at step 2; a probe at every 4th step catches it by step 4 at the latest.
        let result = try Self.train(Self.job("{vendor: Acme, name: defective, fault: 'corrupt@step=2'}", probeEvery: probeEvery))
        #expect(result.status != 0)
        #expect(result.stderr.contains("silent corruption") && result.stderr.contains("rank 1 (sim defective) computes wrong numbers"),
                "\(result.output)")
    }

    @Test("no false alarm: fp32, bf16 and fp16 sims pass the probe and the fingerprints at every step",
          arguments: ["fp32", "bf16", "fp16"])
    func noFalseAlarm(_ precision: String) throws {
        let result = try Self.train(Self.job("{vendor: Acme, name: honest, precision: \(precision), kernels: cpu}", probeEvery: 1, steps: 8))
        #expect(result.status == 0, "\(result.output)")
        #expect(result.stdout.contains("done: 8 steps") && !result.output.contains("corruption"), "\(result.output)")
    }
}
