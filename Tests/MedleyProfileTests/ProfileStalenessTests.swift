import Foundation
import MedleyComm
import MedleyCore
import MedleyPlanner
import MedleyProfile
import MedleyTestSupport
import Testing

/// The staleness probe stored with a chip profile: the comparison (scripted figures) and what a
/// load does with a cached profile whose stored probe is doctored. No test asserts a timing: a
/// doctored probe is 2× off, and a "matching" one is compared with a threshold no noise reaches.
@Suite("Profiles: the staleness probe", .serialized)
struct ProfileStalenessTests {
    static let probe = ProfileProbe(hostSgemmGflops: 100, layerMs: 2, microbatch: 1)

    // MARK: Comparison

    @Test("a probe within the threshold is kept; a 2x one either way, or none stored, is stale")
    func comparison() {
        let same = ProbeCheck(stored: Self.probe, now: Self.probe, threshold: 0.15)
        #expect(!same.stale && same.ratio == 1 && same.layerRatio == 1 && same.hostRatio == 1)

        let near = ProbeCheck(
            stored: Self.probe, now: ProfileProbe(hostSgemmGflops: 92, layerMs: 2.2, microbatch: 1), threshold: 0.15)
        #expect(!near.stale)

        // The stored probe 2× faster than now: the chip (or the host) slowed by half.
        let slowChip = ProbeCheck(
            stored: ProfileProbe(hostSgemmGflops: 100, layerMs: 1, microbatch: 1), now: Self.probe, threshold: 0.15)
        #expect(slowChip.stale && slowChip.ratio == 2 && slowChip.layerRatio == 2 && slowChip.hostRatio == 1)
        #expect(slowChip.summary.contains("2.00× slower"), "\(slowChip.summary)")
        let slowHost = ProbeCheck(
            stored: ProfileProbe(hostSgemmGflops: 200, layerMs: 2, microbatch: 1), now: Self.probe, threshold: 0.15)
        #expect(slowHost.stale && slowHost.hostRatio == 2 && slowHost.ratio == 2)
        // Faster now counts too: the profile was measured on a busy host.
        let faster = ProbeCheck(
            stored: ProfileProbe(hostSgemmGflops: 100, layerMs: 4, microbatch: 1), now: Self.probe, threshold: 0.15)
        #expect(faster.stale && faster.ratio == 0.5)
        #expect(faster.summary.contains("2.00× faster"), "\(faster.summary)")
        // The threshold is the knob: 2× passes under 1.5 (stale beyond 2.5×).
        #expect(!ProbeCheck(stored: ProfileProbe(hostSgemmGflops: 100, layerMs: 1, microbatch: 1), now: Self.probe, threshold: 1.5).stale)

        let unknown = ProbeCheck(stored: nil, now: Self.probe, threshold: 0.15)
        #expect(unknown.stale && unknown.ratio == nil)
        #expect(unknown.summary.contains("no staleness probe"))
        // No host figure on one side (no cpu adapter): the chip's figure decides alone.
        let noHost = ProbeCheck(
            stored: ProfileProbe(hostSgemmGflops: 0, layerMs: 2, microbatch: 1), now: Self.probe, threshold: 0.15)
        #expect(!noHost.stale && noHost.hostRatio == 1)
        let otherSize = ProbeCheck(
            stored: ProfileProbe(hostSgemmGflops: 100, layerMs: 2, microbatch: 4), now: Self.probe, threshold: 0.15)
        #expect(otherSize.stale && otherSize.ratio == nil)
    }

    @Test("a probe survives the record's protobuf round trip; a record without one reads as none; a bad one is rejected")
    func protobuf() throws {
        let profile = DeviceProfile(
            chip: "reference", adapter: "reference", vendor: "Medley", name: "ref", memoryBytes: 1 << 30,
            timings: [.init(kind: .block, microbatch: 1, forwardMs: 1, backwardMs: 2)], optimizerMsPerParameterByte: 1e-6)
        let with = DeviceProfileRecord(profile: profile, cacheKey: "k", measuredUnixMillis: 5, probe: Self.probe)
        #expect(try DeviceProfileRecord(framed: with.framed()) == with)
        let without = DeviceProfileRecord(profile: profile, cacheKey: "k", measuredUnixMillis: 5)
        #expect(try DeviceProfileRecord(framed: without.framed()).probe == nil)
        for bad in [
            ProfileProbe(hostSgemmGflops: -1, layerMs: 1, microbatch: 1),
            ProfileProbe(hostSgemmGflops: 1, layerMs: .infinity, microbatch: 1),
            ProfileProbe(hostSgemmGflops: 1, layerMs: 1, microbatch: 0),
        ] {
            var record = with
            record.probe = bad
            #expect(throws: MedleyError.self) { try DeviceProfileRecord(serialized: record.serialized()) }
        }
    }

    // MARK: Loading

    /// Rewrites the cached record of `file` through `change`.
    static func doctor(_ file: String, _ change: (inout DeviceProfileRecord) -> Void) throws {
        var record = try DeviceProfileRecord(framed: [UInt8](try Data(contentsOf: URL(fileURLWithPath: file))))
        change(&record)
        try Data(record.framed()).write(to: URL(fileURLWithPath: file))
    }

    static func stored(_ file: String) throws -> DeviceProfileRecord {
        try DeviceProfileRecord(framed: [UInt8](try Data(contentsOf: URL(fileURLWithPath: file))))
    }

    @Test("a cached profile whose stored probe is doctored 2x faster is stale and measured again; with warn it is kept with one line")
    func doctoredProbe() throws {
        let spec = try JobSpec.parse(yaml: ProfileTests.tinyJob)
        let dir = try TestSupport.temporaryDirectory("medley-profiles")
        let first = try JobProfiles.load(spec: spec, options: ProfileTests.options(cache: dir, staleness: .remeasure))
        // A fresh measurement stores a probe, and nothing was compared.
        for chip in first.chips {
            let probe = try #require(chip.probe)
            #expect(probe.layerMs > 0 && probe.hostSgemmGflops > 0 && probe.microbatch == ProfileProbe.layerMicrobatch)
            #expect(chip.staleness == nil)
            #expect(try Self.stored(chip.cacheFile).probe == probe)
        }
        let target = first.chips[0]
        func halve(_ record: inout DeviceProfileRecord) {
            record.probe!.layerMs /= 2
            record.probe!.hostSgemmGflops *= 2
        }
        try Self.doctor(target.cacheFile, halve)
        let doctored = try #require(try Self.stored(target.cacheFile).probe)

        // Warn: kept as it is, one line naming the chip, what was stored and what to do.
        let warnings = WarningLog()
        let kept = try JobProfiles.load(
            spec: spec, options: ProfileTests.options(cache: dir, warn: warnings, staleness: .warn))
        let keptCheck = try #require(kept.chips[0].staleness)
        #expect(kept.chips[0].cached && keptCheck.stale && !keptCheck.remeasured && keptCheck.stored == doctored)
        #expect(try #require(keptCheck.ratio) > 1, "the doctored probe is faster than the chip")
        // (The other chip's tiny layer may trip the 15 % on a busy host too; only the doctored one must.)
        let stale = warnings.lines.filter { $0.contains("stale") && $0.contains(target.type.key) }
        #expect(stale.count == 1, "\(warnings.lines)")
        #expect(stale.first?.contains("--refresh") == true && !(stale.first?.contains("\n") ?? true))
        #expect(try Self.stored(target.cacheFile).probe == doctored, "warn must not rewrite the file")

        // Re-measure (the default): measured again, the check says why, the file holds a new probe.
        let progress = WarningLog()
        let remeasured = try JobProfiles.load(
            spec: spec, options: ProfileTests.options(cache: dir, staleness: .remeasure, progress: progress))
        let chip = remeasured.chips[0]
        let check = try #require(chip.staleness)
        #expect(!chip.cached && check.stale && check.remeasured && check.stored == doctored)
        #expect(chip.measuredUnixMillis >= target.measuredUnixMillis)
        let fresh = try #require(try Self.stored(chip.cacheFile).probe)
        #expect(fresh != doctored && chip.probe == fresh)
        #expect(progress.lines.contains { $0.contains("stale") && $0.contains(target.type.key) }, "\(progress.lines)")
        #expect(remeasured.probeTable().contains("stale, re-measured"))
        let json = String(decoding: try remeasured.json(), as: UTF8.self)
        #expect(json.contains("\"remeasured\" : true"))
    }

    @Test("a matching probe keeps the cached profile; a record without a probe is stale-unknown; off probes nothing")
    func matchingAndUnknown() throws {
        let spec = try JobSpec.parse(yaml: ProfileTests.tinyJob)
        let dir = try TestSupport.temporaryDirectory("medley-profiles")
        _ = try JobProfiles.load(spec: spec, options: ProfileTests.options(cache: dir, staleness: .remeasure))

        // Matching: the stored probe as measured, against a threshold (stale beyond 51×) that no
        // host noise reaches, so the test does not depend on timings.
        let matching = try JobProfiles.load(
            spec: spec, options: ProfileTests.options(cache: dir, staleness: .remeasure, threshold: 50))
        for chip in matching.chips {
            let check = try #require(chip.staleness)
            #expect(chip.cached && !check.stale && !check.remeasured && check.stored == chip.probe)
            #expect(check.ratio.map { $0 > 0 && $0.isFinite } == true)
        }
        #expect(matching.probeTable().contains(" ok"))

        // A record of an older medley (no probe): warned about, or measured again.
        let file = matching.chips[1].cacheFile
        try Self.doctor(file) { $0.probe = nil }
        let warnings = WarningLog()
        let warned = try JobProfiles.load(
            spec: spec, options: ProfileTests.options(cache: dir, warn: warnings, staleness: .warn, threshold: 50))
        #expect(warned.chips[1].cached && warned.chips[1].staleness?.stale == true && warned.chips[1].probe == nil)
        #expect(warnings.lines.count == 1 && warnings.lines[0].contains("no staleness probe"), "\(warnings.lines)")
        #expect(warned.chips[0].staleness?.stale == false)

        let off = try JobProfiles.load(spec: spec, options: ProfileTests.options(cache: dir, staleness: .off))
        #expect(off.chips.allSatisfy { $0.cached && $0.staleness == nil })

        let repaired = try JobProfiles.load(
            spec: spec, options: ProfileTests.options(cache: dir, staleness: .remeasure, threshold: 50))
        #expect(!repaired.chips[1].cached && repaired.chips[1].staleness?.remeasured == true)
        #expect(try Self.stored(file).probe != nil)
        #expect(repaired.chips[0].cached)

        #expect(throws: MedleyError.self) {
            try JobProfiles.load(spec: spec, options: ProfileTests.options(cache: dir, staleness: .warn, threshold: 0))
        }
    }
}
