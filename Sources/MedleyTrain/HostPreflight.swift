import Foundation
import MedleyAdapters
import MedleyComm
import MedleyCore

/// Before a job across hosts trains, every rank's own host is asked about its chip: does the
/// adapter load there, does the device open, how much memory has it, and which versions of
/// Medley and of the adapter run there. `medley preflight-rank` answers for one rank, started
/// under mpirun with the job's placement (so it runs where the rank will run, through the same
/// agent and network); ``run(job:program:timeoutSeconds:)`` collects the answers and
/// ``problems(_:spec:)`` turns them into one line per host that cannot take part.
public enum HostPreflight {
    /// The version of Medley a host runs, compared across hosts before training.
    public static var medleyVersion: String { "medley \(MedleyVersion.string) (ABI \(AdapterABI.major).\(AdapterABI.minor), opset \(AdapterABI.opsetVersion))" }

    /// What one rank's host says about its chip.
    public struct Probe: Codable, Sendable, Equatable {
        /// The rank.
        public var rank: Int
        /// The host's own name (`gethostname`).
        public var hostname: String
        /// Why the chip cannot be used there; nil when it opened.
        public var error: String?
        /// The adapter's `plugin_info` name and version, and its ABI.
        public var adapter: String?
        public var adapterVersion: String?
        public var abi: String?
        /// The chip's name and memory.
        public var chip: String?
        public var memoryBytes: UInt64?
        /// ``HostPreflight/medleyVersion`` on that host.
        public var medley: String

        public init(
            rank: Int, hostname: String, error: String? = nil, adapter: String? = nil, adapterVersion: String? = nil,
            abi: String? = nil, chip: String? = nil, memoryBytes: UInt64? = nil, medley: String
        ) {
            self.rank = rank
            self.hostname = hostname
            self.error = error
            self.adapter = adapter
            self.adapterVersion = adapterVersion
            self.abi = abi
            self.chip = chip
            self.memoryBytes = memoryBytes
            self.medley = medley
        }

        enum CodingKeys: String, CodingKey {
            case rank, hostname, error, adapter, abi, chip, medley
            case adapterVersion = "adapter_version"
            case memoryBytes = "memory_bytes"
        }
    }

    /// The prefix of the one line `medley preflight-rank` prints.
    public static let linePrefix = "@medley-preflight "

    /// Probes rank `rank`'s chip on this host; never throws (a failure is the probe's error).
    public static func probe(spec: JobSpec, rank: Int) -> Probe {
        var probe = Probe(rank: rank, hostname: ProcessInfo.processInfo.hostName, medley: medleyVersion)
        let ranks = spec.rankDevices
        guard rank >= 0 && rank < ranks.count else {
            probe.error = "the job lists \(ranks.count) devices but this is rank \(rank)"
            return probe
        }
        do {
            // Opened exactly as the rank will open it.
            let (library, opened) = try RankSession.open(ranks[rank])
            probe.adapter = library.info.name
            probe.adapterVersion = library.info.version
            probe.abi = "\(library.abiMajor).\(library.abiMinor)"
            probe.chip = opened.description.name
            probe.memoryBytes = opened.description.memoryBytes
            try opened.close()
        } catch let error as MedleyError {
            probe.error = error.message
        } catch {
            probe.error = "\(error)"
        }
        return probe
    }

    /// The probe as the line `medley preflight-rank` prints.
    public static func line(_ probe: Probe) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let json = (try? encoder.encode(probe)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        return linePrefix + json
    }

    /// Runs `program preflight-rank` for every rank of `job` under mpirun with the job's
    /// placement, and returns one probe per rank. A rank whose host could not be reached (no
    /// line came back) gets a probe whose error says so.
    public static func run(job: JobSpec, program: String, timeoutSeconds: Int = 60) throws -> [Probe] {
        let directory = NSTemporaryDirectory() + "/medley-preflight-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let jobFile = directory + "/job.yaml"
        try job.yamlString().write(toFile: jobFile, atomically: true, encoding: .utf8)
        var mpirun = MPIRun(ranks: job.rankCount, timeoutSeconds: timeoutSeconds)
        mpirun.place(job)
        let outcome = try mpirun.run(program: program, arguments: ["preflight-rank", "--job", jobFile], graceSeconds: 10)
        let decoder = JSONDecoder()
        var probes: [Int: Probe] = [:]
        for line in outcome.output.split(separator: "\n") {
            guard let at = line.range(of: linePrefix) else { continue }
            let json = line[at.upperBound...]
            if let probe = try? decoder.decode(Probe.self, from: Data(json.utf8)) { probes[probe.rank] = probe }
        }
        let said = outcome.output.split(separator: "\n").first { !$0.contains(linePrefix) && !$0.trimmingCharacters(in: .whitespaces).isEmpty }
        return (0..<job.rankCount).map { rank in
            probes[rank] ?? Probe(
                rank: rank, hostname: job.rankHosts[rank] ?? "this host",
                error: "no answer from its host within \(timeoutSeconds) s (mpirun exited with status \(outcome.status)\(said.map { "; it said: \"\($0)\"" } ?? ""))",
                medley: "")
        }
    }

    /// The environment ranks need on every host (where adapters and caches are): ranks there
    /// start from a clean environment (ssh or the agent).
    public static func forwardedEnvironment() -> [String: String] {
        let env = ProcessInfo.processInfo.environment
        var forwarded: [String: String] = [:]
        for key in ["MEDLEY_ADAPTER_PATH", "MEDLEY_CACHE_DIR", "OCL_ICD_VENDORS"] { if let value = env[key] { forwarded[key] = value } }
        return forwarded
    }

    /// One problem: the rank it rules out, and the line that names its host and the reason.
    public struct Problem: Sendable, Equatable {
        public var rank: Int
        public var line: String
    }

    /// Every rank that cannot take part, one line each naming its host: the chip does not open
    /// there, or that host runs another version of Medley, or of the adapter, than the others.
    public static func problems(_ probes: [Probe], spec: JobSpec) -> [Problem] {
        let ranks = spec.rankDevices
        func place(_ probe: Probe) -> String {
            let named = probe.rank < ranks.count ? ranks[probe.rank].host : nil
            return "host \(named ?? probe.hostname)"
        }
        func field(_ probe: Probe) -> String {
            guard probe.rank < ranks.count else { return "rank \(probe.rank)" }
            return "devices[\(ranks[probe.rank].entry)] (\(ranks[probe.rank].adapter), rank \(probe.rank))"
        }
        var problems: [Problem] = []
        for probe in probes {
            if let error = probe.error {
                problems.append(Problem(rank: probe.rank, line: "\(place(probe)): \(field(probe)): \(error)"))
            } else if probe.medley != medleyVersion {
                problems.append(Problem(
                    rank: probe.rank,
                    line: "\(place(probe)): runs \(probe.medley), this host \(medleyVersion); install the same build of Medley on every host"))
            }
        }
        // One adapter, one version: the first host that opened it sets it.
        var first: [String: Probe] = [:]
        for probe in probes where probe.error == nil {
            guard let adapter = probe.adapter else { continue }
            guard let seen = first[adapter] else {
                first[adapter] = probe
                continue
            }
            if seen.adapterVersion != probe.adapterVersion || seen.abi != probe.abi {
                problems.append(Problem(
                    rank: probe.rank,
                    line: "\(place(probe)): \(field(probe)): adapter \(adapter) \(probe.adapterVersion ?? "?") (ABI \(probe.abi ?? "?")) differs from \(adapter) \(seen.adapterVersion ?? "?") (ABI \(seen.abi ?? "?")) on \(place(seen)); install one version on every host"))
            }
        }
        return problems.sorted { $0.rank < $1.rank }
    }
}

extension MPIRun {
    /// Places the ranks of a job across hosts (nothing for a job on this host): each on its
    /// chip's host, over the job's network, with the environment that says where adapters and
    /// caches are. The preflight and the training run use the same placement.
    mutating func place(_ job: JobSpec) {
        guard job.isMultiHost else { return }
        environment.merge(HostPreflight.forwardedEnvironment()) { current, _ in current }
        placement = job.rankHosts
        interfaces = job.network.interfaces
        rshAgent = job.network.rshAgent
        linkTimeoutSeconds = job.network.linkTimeout
    }
}
