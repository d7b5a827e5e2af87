import ArgumentParser
import Foundation
import MedleyComm
import MedleyCore
import MedleyProfile

/// Options shared by `medley profile` and `medley plan`: which job, and how to get its profiles.
struct ProfileOptions: ParsableArguments {
    @Argument(help: "A YAML job spec; leave out for the built-in mixed job.")
    var job: String?

    @Flag(help: "Measure again even when the profile cache holds the job's profiles.")
    var refresh = false

    @Option(help: "The profile cache directory (default: $MEDLEY_CACHE_DIR/profiles, else ~/.cache/medley/profiles).")
    var cache: String?

    @Option(help: "Microbatch sizes to time, e.g. 1,4,12 (default: 1, batch/ranks rounded up, and batch).")
    var microbatches: String?

    @Option(help: "Timed samples of each layer measurement (the median is kept).")
    var repetitions = 5

    @Option(help: "Untimed runs before each measurement.")
    var warmups = 1

    @Option(help: "mpirun --timeout of the ping-pong, in seconds.")
    var timeout = 120

    @Flag(help: "Keep a cached profile whose quick probe no longer matches (warn in one line) instead of measuring it again.")
    var keepStale = false

    @Flag(help: "Use cached profiles without probing whether the chip or host still runs at the measured speed.")
    var noStalenessCheck = false

    @Option(help: "How far a probe figure may move before a cached profile counts as stale (0.15 = 15 %).")
    var stalenessThreshold = JobProfiles.Options.defaultStalenessThreshold

    /// What to do with a stale cached profile, from the flags.
    var staleness: JobProfiles.StalenessCheck { noStalenessCheck ? .off : keepStale ? .warn : .remeasure }

    /// The job spec.
    func spec() throws -> JobSpec { try JobSpec.load(path: job) }

    /// Loads or measures the job's profiles; progress lines go to `progress`, warnings to stderr.
    func load(_ spec: JobSpec, progress: @escaping @Sendable (String) -> Void) throws -> JobProfiles {
        var sizes: [Int]?
        if let microbatches {
            let parts = microbatches.split(separator: ",", omittingEmptySubsequences: false)
            let parsed = parts.map { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard !parts.isEmpty, parsed.allSatisfy({ ($0 ?? 0) >= 1 }) else {
                throw MedleyError(
                    .invalidArgument, "--microbatches: expected whole numbers of at least 1 separated by commas (e.g. 1,4,12), got '\(microbatches)'")
            }
            sizes = parsed.map { $0! }
        }
        guard timeout >= 1 else { throw MedleyError(.invalidArgument, "--timeout must be at least 1 second, got \(timeout)") }
        guard repetitions >= 1 else { throw MedleyError(.invalidArgument, "--repetitions must be at least 1, got \(repetitions)") }
        guard warmups >= 0 else { throw MedleyError(.invalidArgument, "--warmups must be 0 or more, got \(warmups)") }
        guard stalenessThreshold.isFinite, stalenessThreshold > 0 else {
            throw MedleyError(
                .invalidArgument, "--staleness-threshold must be a fraction above 0 (0.15 = 15 %), got \(stalenessThreshold)")
        }
        guard !(keepStale && noStalenessCheck) else {
            throw MedleyError(.invalidArgument, "--keep-stale and --no-staleness-check contradict each other; give one")
        }
        let options = JobProfiles.Options(
            refresh: refresh, cacheDirectory: cache.map { URL(fileURLWithPath: $0).standardizedFileURL.path },
            microbatchSizes: sizes, warmups: warmups, repetitions: repetitions, timeoutSeconds: timeout,
            progress: progress,
            warn: { FileHandle.standardError.write(Data(($0 + "\n").utf8)) },
            staleness: staleness, stalenessThreshold: stalenessThreshold)
        return try JobProfiles.load(spec: spec, options: options)
    }
}

extension JobProfiles.Options {
    /// The options `plan: auto` loads profiles with in `medley train` and `medley launch`, and
    /// `medley bench prediction`: the defaults (a stale cached profile is measured again, as a
    /// missing one is, without progress lines), with warnings (an unreadable cache file) on
    /// standard error.
    static var atLaunch: JobProfiles.Options {
        JobProfiles.Options(warn: { FileHandle.standardError.write(Data(($0 + "\n").utf8)) })
    }
}

/// Writes a line to standard output or, when standard output carries JSON, to standard error.
func progressPrinter(json: Bool) -> @Sendable (String) -> Void {
    { line in (json ? FileHandle.standardError : FileHandle.standardOutput).write(Data((line + "\n").utf8)) }
}

/// `medley profile`: measure (or read from the cache) every chip type of a job and the link.
struct ProfileJob: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "profile",
        abstract: "Measure each chip type of a job: ms per layer kind, optimizer cost, memory, and the link between ranks.",
        discussion: """
            For each distinct chip type of JOB (adapter + options; devices alike share one profile) \
            it times ONE layer of each kind (embedding, block, head+loss) forward and backward on the \
            real device at each microbatch size, AdamW per parameter byte, and reads the device's \
            memory; then an MPI ping-pong between 2 ranks under mpirun gives the link's latency and \
            bandwidth. Profiles are cached on disk (keyed by adapter, options and model) and reused; \
            --refresh measures again. Each profile is stored with a quick probe (host sgemm and one \
            block layer); a cached profile is probed again when reused and measured again when a \
            figure moved by more than --staleness-threshold (--keep-stale: warn instead). --check \
            only compares: it prints each chip's stored and current probe and exits 1 when one is \
            stale. See docs/planning.md.
            """)

    @OptionGroup var profile: ProfileOptions

    @Flag(help: "Print the profiles as JSON.")
    var json = false

    @Flag(help: "Compare each cached profile's probe with one taken now, print both, and exit 1 when one is stale (a stale profile is kept).")
    var check = false

    func run() throws {
        let spec = try profile.spec()
        if check {
            guard !profile.noStalenessCheck else {
                throw MedleyError(.invalidArgument, "--check compares probes; it cannot be combined with --no-staleness-check")
            }
            guard !profile.refresh else {
                throw MedleyError(.invalidArgument, "--check compares the cached profiles; it cannot be combined with --refresh")
            }
            var options = profile
            options.keepStale = true
            let profiles = try options.load(spec, progress: progressPrinter(json: json))
            if json {
                FileHandle.standardOutput.write(try profiles.json() + Data("\n".utf8))
            } else {
                print(profiles.probeTable())
            }
            if profiles.chips.contains(where: { $0.staleness?.stale == true }) { throw ExitCode(1) }
            return
        }
        let profiles = try profile.load(spec, progress: progressPrinter(json: json))
        if json {
            FileHandle.standardOutput.write(try profiles.json() + Data("\n".utf8))
        } else {
            print("profiles of job \(spec.name): \(spec.rankCount) rank\(spec.rankCount == 1 ? "" : "s"), \(profiles.chips.count) chip type\(profiles.chips.count == 1 ? "" : "s")")
            print(profiles.table())
        }
    }
}

/// `medley ping-pong`: the ranks' side of the link measurement (started by `medley profile` under mpirun).
struct PingPongRanks: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: PingPong.commandName,
        abstract: "The ranks' side of the MPI ping-pong (started by `medley profile` under mpirun).",
        shouldDisplay: false)

    @Option(help: "Rank 0 writes the samples here (JSON).")
    var output: String

    @Option(help: "Message sizes in bytes, comma-separated.")
    var sizes: String

    @Option(help: "Untimed round trips per size.")
    var warmups = 3

    @Option(help: "Timed round trips per size.")
    var repetitions = 30

    func run() throws {
        guard MPIRuntime.isUnderLauncher else {
            throw MedleyError(.invalidArgument, "medley \(PingPong.commandName) runs under mpirun; use `medley profile` instead")
        }
        let parsed = sizes.split(separator: ",").compactMap { Int($0) }
        let configuration = PingPong.Configuration(sizes: parsed, warmups: warmups, repetitions: repetitions)
        try MPIRuntime.initialize(requesting: .funneled)
        do {
            let world = try Communicator.world()
            if let samples = try PingPong.runRanks(on: world, configuration: configuration) {
                try PingPong.write(samples, to: output)
            }
            try MPIRuntime.finalize()
        } catch {
            FileHandle.standardError.write(Data("Error: \(error)\n".utf8))
            MPIRuntime.abort(exitCode: 1)
        }
    }
}
