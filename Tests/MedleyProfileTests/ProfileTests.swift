import Foundation
import MedleyComm
import MedleyCore
import MedleyPlanner
import MedleyProfile
import MedleyTestSupport
import Testing

/// Warnings collected from a profile load (the cache reports unreadable files through them).
final class WarningLog: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: [String] = []

    func append(_ line: String) { lock.withLock { stored.append(line) } }
    var lines: [String] { lock.withLock { stored } }
}

@Suite("Profiles: chip types, measurement, cache, ping-pong", .serialized)
struct ProfileTests {
    /// A tiny job: one sim chip (two ranks of it) and one reference chip, a 1-block model.
    static let tinyJob = """
        name: tiny
        model: {layers: 1, dim: 16, heads: 2, seq: 8, batch: 4}
        devices:
          - {adapter: sim, options: {speed: 0.5, vendor: Acme}, count: 2}
          - reference
        """

    /// Fast measurement options for tests: no warm-up beyond the one that sizes samples, one
    /// sample. The staleness probe is off unless asked for: these tests are about the cache, and
    /// a tiny layer's time is too noisy to promise a probe match (ProfileStalenessTests set it).
    static func options(
        cache: String, refresh: Bool = false, warn: WarningLog? = nil, staleness: JobProfiles.StalenessCheck = .off,
        threshold: Double = JobProfiles.Options.defaultStalenessThreshold, progress: WarningLog? = nil
    ) -> JobProfiles.Options {
        JobProfiles.Options(
            refresh: refresh, cacheDirectory: cache, microbatchSizes: [1, 2], warmups: 0, repetitions: 1,
            pingPong: PingPong.Configuration(sizes: [8, 1 << 16, 1 << 20], warmups: 1, repetitions: 5),
            timeoutSeconds: 60, program: TestSupport.medleyExecutable, searchPath: TestSupport.buildSearchPath,
            progress: { progress?.append($0) }, warn: { warn?.append($0) }, staleness: staleness, stalenessThreshold: threshold)
    }

    static func modificationDate(_ path: String) throws -> Date {
        try #require(try FileManager.default.attributesOfItem(atPath: path)[.modificationDate] as? Date)
    }

    // MARK: Chip types

    @Test("devices with the same adapter and options share one chip type; the key sorts the options")
    func chipTypes() throws {
        let spec = try JobSpec.parse(
            yaml: """
                devices:
                  - cpu
                  - {adapter: sim, options: {vendor: Acme, speed: 0.5}}
                  - {adapter: sim, options: {speed: 0.5, vendor: Acme}, count: 2}
                  - {adapter: sim, options: {speed: 0.25}}
                """)
        let types = ChipType.of(spec)
        #expect(types.map(\.key) == ["cpu", "sim{speed=0.5,vendor=Acme}", "sim{speed=0.25}"])
        #expect(types.map(\.ranks) == [[0], [1, 2, 3], [4]])
        #expect(JobProfiles.defaultMicrobatchSizes(for: spec) == [1, 2, 3, 4, 8, 12])
    }

    // MARK: Measurement

    @Test("a sim and a reference chip get positive, finite times for every layer kind and size")
    func measuresEveryKind() throws {
        let model = JobSpec.Model(layers: 2, dim: 16, heads: 2, seq: 8, globalBatch: 4)
        let profiler = try DeviceProfiler(
            model: model, microbatchSizes: [2, 1, 2], warmups: 0, repetitions: 1, searchPath: TestSupport.buildSearchPath)
        #expect(profiler.microbatchSizes == [1, 2])
        for chip in [
            ChipType(adapter: "sim", options: ["speed": "0.5", "vendor": "Acme", "name": "acme-t"], ranks: [0]),
            ChipType(adapter: "reference", options: [:], ranks: [0]),
        ] {
            let profile = try profiler.measure(chip)
            #expect(profile.chip == chip.key)
            #expect(profile.memoryBytes > 0)
            for kind in ModelCost.Layer.Kind.allCases {
                for size in [1, 2] {
                    let timing = try #require(profile.timings.first { $0.kind == kind && $0.microbatch == size })
                    #expect(timing.forwardMs.isFinite && timing.forwardMs > 0, "\(chip.key) \(kind) \(size)")
                    #expect(timing.backwardMs.isFinite && timing.backwardMs > 0, "\(chip.key) \(kind) \(size)")
                }
            }
            #expect(profile.optimizerMsPerParameterByte.isFinite && profile.optimizerMsPerParameterByte > 0)
            if chip.adapter == "sim" { #expect(profile.vendor == "Acme" && profile.name == "acme-t") }
        }
    }

    @Test("a chip that cannot hold one layer for one sequence fails with one line naming the bytes")
    func tooSmallToProfile() throws {
        let profiler = try DeviceProfiler(
            model: JobSpec.Model(layers: 1, dim: 64, heads: 4, seq: 64, globalBatch: 4), microbatchSizes: [1, 4], warmups: 0,
            repetitions: 1, searchPath: TestSupport.buildSearchPath)
        let error = try #require(throws: MedleyError.self) {
            try profiler.measure(ChipType(adapter: "sim", options: ["memory": "64KiB"], ranks: [0]))
        }
        #expect(error.code == .outOfMemory)
        #expect(error.description.contains("cannot hold one"), "\(error)")
        #expect(!error.description.contains("\n"))
    }

    @Test("bad profiler settings are rejected")
    func badSettings() {
        let model = JobSpec.Model()
        #expect(throws: MedleyError.self) { try DeviceProfiler(model: model, microbatchSizes: []) }
        #expect(throws: MedleyError.self) { try DeviceProfiler(model: model, microbatchSizes: [0]) }
        #expect(throws: MedleyError.self) { try DeviceProfiler(model: model, microbatchSizes: [1], repetitions: 0) }
        #expect(throws: MedleyError.self) { try PingPong.Configuration(sizes: [8]).validate() }
    }

    // MARK: Protobuf

    @Test("DeviceProfile and NetworkProfile survive a framed protobuf round trip; bad ones are rejected")
    func protobufRoundTrip() throws {
        let profile = DeviceProfile(
            chip: "sim{speed=0.5,vendor=Acme}", adapter: "sim", vendor: "Acme", name: "acme-x1", memoryBytes: 3 << 30,
            timings: [
                .init(kind: .embedding, microbatch: 1, forwardMs: 0.01, backwardMs: 0.02),
                .init(kind: .block, microbatch: 4, forwardMs: 1.5, backwardMs: 3.25),
                .init(kind: .head, microbatch: 4, forwardMs: 0.75, backwardMs: 0),
            ], optimizerMsPerParameterByte: 1.25e-6)
        let record = DeviceProfileRecord(profile: profile, cacheKey: "key\nwith lines", measuredUnixMillis: 1_700_000_000_123)
        #expect(try DeviceProfileRecord(framed: record.framed()) == record)
        let network = NetworkProfileRecord(
            network: NetworkModel(latencySeconds: 2e-6, bytesPerSecond: 8e9), cacheKey: "net", measuredUnixMillis: 7)
        #expect(try NetworkProfileRecord(framed: network.framed()) == network)

        // Wrong kind of frame, a flipped bit, a truncated file: all thrown, never a crash.
        #expect(throws: MedleyError.self) { try NetworkProfileRecord(framed: record.framed()) }
        var flipped = record.framed()
        flipped[flipped.count - 3] ^= 0x10
        #expect(throws: MedleyError.self) { try DeviceProfileRecord(framed: flipped) }
        #expect(throws: MedleyError.self) { try DeviceProfileRecord(framed: Array(record.framed().dropLast(5))) }

        // Values a profile cannot have.
        var negative = record
        negative.profile.timings[0].forwardMs = -1
        #expect(throws: MedleyError.self) { try DeviceProfileRecord(serialized: negative.serialized()) }
        var nan = record
        nan.profile.optimizerMsPerParameterByte = .nan
        #expect(throws: MedleyError.self) { try DeviceProfileRecord(serialized: nan.serialized()) }
        var zeroBatch = record
        zeroBatch.profile.timings[1].microbatch = 0
        #expect(throws: MedleyError.self) { try DeviceProfileRecord(serialized: zeroBatch.serialized()) }
        var noBandwidth = network
        noBandwidth.network.bytesPerSecond = 0
        #expect(throws: MedleyError.self) { try NetworkProfileRecord(serialized: noBandwidth.serialized()) }
    }

    // MARK: Cache

    @Test("the cache is reused without measuring, --refresh measures again, a corrupt file is measured again with a warning")
    func cache() throws {
        let spec = try JobSpec.parse(yaml: Self.tinyJob)
        let dir = try TestSupport.temporaryDirectory("medley-profiles")

        let first = try JobProfiles.load(spec: spec, options: Self.options(cache: dir))
        #expect(first.chips.map(\.type.key) == ["sim{speed=0.5,vendor=Acme}", "reference"])
        #expect(first.chips.allSatisfy { !$0.cached } && !first.link.cached)
        #expect(first.inventory.devices == [0, 0, 1])
        #expect(first.inventory.profiles.count == 2)
        #expect(first.model.blockCount == 1)
        // The ping-pong ran under real mpirun with 2 ranks.
        #expect(first.network.latencySeconds > 0 && first.network.latencySeconds.isFinite)
        #expect(first.network.bytesPerSecond > 0 && first.network.bytesPerSecond.isFinite)
        let files = first.chips.map(\.cacheFile) + [first.link.cacheFile]
        #expect(Set(files).count == 3)
        let dates = try files.map(Self.modificationDate)

        Thread.sleep(forTimeInterval: 0.05)
        let second = try JobProfiles.load(spec: spec, options: Self.options(cache: dir))
        #expect(second.chips.allSatisfy(\.cached) && second.link.cached)
        #expect(second.chips.map(\.profile) == first.chips.map(\.profile))
        #expect(second.network == first.network)
        #expect(try files.map(Self.modificationDate) == dates, "a cache hit must not rewrite the files")

        let refreshed = try JobProfiles.load(spec: spec, options: Self.options(cache: dir, refresh: true))
        #expect(refreshed.chips.allSatisfy { !$0.cached } && !refreshed.link.cached)
        #expect(zip(refreshed.chips, first.chips).allSatisfy { $0.measuredUnixMillis >= $1.measuredUnixMillis })
        #expect(try files.map(Self.modificationDate) != dates)

        // Garbage in one chip's file: a warning naming it, that chip measured again, the others cached.
        let corrupt = refreshed.chips[1].cacheFile
        try Data("not a profile".utf8).write(to: URL(fileURLWithPath: corrupt))
        let warnings = WarningLog()
        let repaired = try JobProfiles.load(spec: spec, options: Self.options(cache: dir, warn: warnings))
        #expect(warnings.lines.count == 1)
        #expect(warnings.lines.first?.contains(corrupt) == true, "\(warnings.lines)")
        #expect(repaired.chips.map(\.cached) == [true, false])
        #expect(repaired.link.cached)
        // The file was rewritten and reads back cleanly.
        let again = try JobProfiles.load(spec: spec, options: Self.options(cache: dir, warn: warnings))
        #expect(again.chips.allSatisfy(\.cached) && warnings.lines.count == 1)
        #expect(try !FileManager.default.contentsOfDirectory(atPath: dir).contains { $0.contains(".tmp-") })
    }

    @Test("the cache key follows adapter, options and layer shape, not the depth")
    func cacheKeys() throws {
        let dir = try TestSupport.temporaryDirectory("medley-profiles")
        func chipFiles(_ yaml: String) throws -> [String] {
            try JobProfiles.load(spec: try JobSpec.parse(yaml: yaml), options: Self.options(cache: dir)).chips.map(\.cacheFile)
        }
        let base = try chipFiles("model: {layers: 1, dim: 16, heads: 2, seq: 8, batch: 2}\ndevices: [reference]")
        let deeper = try chipFiles("model: {layers: 3, dim: 16, heads: 2, seq: 8, batch: 2}\ndevices: [reference]")
        let wider = try chipFiles("model: {layers: 1, dim: 32, heads: 2, seq: 8, batch: 2}\ndevices: [reference]")
        let optioned = try chipFiles(
            "model: {layers: 1, dim: 16, heads: 2, seq: 8, batch: 2}\ndevices: [{adapter: sim, options: {speed: 0.5}}]")
        #expect(base == deeper)
        #expect(base != wider)
        #expect(base != optioned)
        #expect(ProfileCache.defaultDirectory(environment: ["MEDLEY_CACHE_DIR": "/c", "HOME": "/h"]) == "/c/profiles")
        #expect(ProfileCache.defaultDirectory(environment: ["XDG_CACHE_HOME": "/x", "HOME": "/h"]) == "/x/medley/profiles")
        #expect(ProfileCache.defaultDirectory(environment: ["HOME": "/h"]) == "/h/.cache/medley/profiles")
    }

    // MARK: Ping-pong

    @Test("the alpha-beta fit recovers latency and bandwidth from exact samples")
    func fit() throws {
        let (alpha, bandwidth) = (3e-6, 5e9)
        let samples = [8, 1024, 65536, 1 << 20, 4 << 20].map {
            PingPong.Sample(bytes: $0, seconds: alpha + Double($0) / bandwidth)
        }
        let model = try PingPong.fit(samples)
        #expect(abs(model.latencySeconds - (alpha + 8 / bandwidth)) < 1e-12)
        #expect(abs(model.bytesPerSecond / bandwidth - 1) < 1e-6)
        // A flat (noise-only) curve still gives a positive bandwidth.
        let flat = try PingPong.fit([PingPong.Sample(bytes: 8, seconds: 2e-3), PingPong.Sample(bytes: 1 << 20, seconds: 1e-3)])
        #expect(flat.bytesPerSecond > 0 && flat.latencySeconds > 0)
        #expect(throws: MedleyError.self) { try PingPong.fit([PingPong.Sample(bytes: 8, seconds: 1e-6)]) }
        #expect(throws: MedleyError.self) {
            try PingPong.fit([PingPong.Sample(bytes: 8, seconds: 0), PingPong.Sample(bytes: 16, seconds: 1e-6)])
        }
    }

    @Test("a ping-pong under real mpirun with 2 ranks gives a positive time for every size")
    func pingPong() throws {
        let configuration = PingPong.Configuration(sizes: [8, 4096, 1 << 20], warmups: 1, repetitions: 5)
        let samples = try PingPong.measure(
            program: TestSupport.medleyExecutable, configuration: configuration, timeoutSeconds: 60)
        #expect(samples.map(\.bytes) == [8, 4096, 1 << 20])
        #expect(samples.allSatisfy { $0.seconds > 0 && $0.seconds.isFinite })
        let model = try PingPong.fit(samples)
        #expect(model.latencySeconds > 0 && model.bytesPerSecond > 0)
    }
}
