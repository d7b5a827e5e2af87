import Foundation
import MedleyCore

/// Starts a program under Open MPI's `mpirun` the same way everywhere, including as root on a
/// 2-core CI box: `--allow-run-as-root` only when root, `--oversubscribe`, `--mca btl self,vader`,
/// `--bind-to none`, and `--timeout` so a hang fails instead of eating CI time.
public struct MPIRun: Sendable {
    /// How a run ended.
    public struct Outcome: Sendable {
        /// mpirun's exit status (non-zero when any rank failed or the timeout fired).
        public var status: Int32
        /// Standard output and standard error, interleaved.
        public var output: String
        /// Whether the Swift-side deadline killed mpirun.
        public var killedAtDeadline: Bool
        /// Wall-clock seconds.
        public var seconds: Double
        /// The signal this process received and passed on to mpirun's process group (see
        /// ``run(program:arguments:graceSeconds:forwardSignals:onOutput:)``), if any.
        public var interruptedBy: Int32? = nil
        /// Whether the caller's `abortWhen` ended it.
        public var aborted = false
        /// The signal that killed mpirun when this process did not send it (its ranks were
        /// killed after it); nil otherwise.
        public var killedFromOutside: Int32? = nil
    }

    /// Number of ranks (`-np`).
    public var ranks: Int
    /// mpirun's own `--timeout`, in seconds.
    public var timeoutSeconds: Int
    /// Extra mpirun arguments, placed before the program.
    public var extraArguments: [String]
    /// Environment variables to add for the ranks (forwarded with `-x`).
    public var environment: [String: String]

    /// Where each rank runs, in rank order (nil = the host mpirun runs on); nil = every rank here.
    /// With any host named, ranks talk over TCP between hosts (shared memory within one).
    public var placement: [String?]? = nil
    /// Interfaces (names or subnets) Open MPI may use between hosts, for MPI and its own control.
    public var interfaces: [String] = []
    /// The program that starts Open MPI's daemon on another host (ssh when nil).
    public var rshAgent: String? = nil
    /// Seconds of silence after which a TCP peer counts as gone (keepalive on Open MPI's sockets).
    public var linkTimeoutSeconds: Double = 10

    /// When set: mpirun is started through this `medley` executable's `exec-shielded`, with
    /// SIGTERM blocked. Inside a Slurm job, Slurm sends SIGTERM to every process of the step at
    /// once; mpirun would kill the ranks at once, so instead only the ranks and the launcher hear
    /// it, and the ranks stop together at a step boundary (with a checkpoint) within the grace time.
    public var shieldingExecutable: String? = nil

    /// Whether the placement names another host: ranks then reach each other over TCP.
    public var spansHosts: Bool { placement?.contains { $0 != nil } ?? false }

    /// Creates a launcher for `ranks` ranks that mpirun stops after `timeoutSeconds`.
    public init(ranks: Int, timeoutSeconds: Int = 60, extraArguments: [String] = [], environment: [String: String] = [:]) {
        self.ranks = ranks
        self.timeoutSeconds = timeoutSeconds
        self.extraArguments = extraArguments
        self.environment = environment
    }

    /// The mpirun to use: `$MEDLEY_MPIRUN`, else `mpirun` on `PATH`.
    public static func findLauncher() throws -> String {
        let env = ProcessInfo.processInfo.environment
        if let explicit = env["MEDLEY_MPIRUN"], !explicit.isEmpty { return explicit }
        for dir in (env["PATH"] ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":") {
            let candidate = "\(dir)/mpirun"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        throw MedleyError(.notFound, "mpirun not found on PATH: install Open MPI (scripts/setup.sh) or set MEDLEY_MPIRUN")
    }

    /// Whether this process runs as root (Open MPI then refuses to start without a flag).
    public static var isRoot: Bool { geteuid() == 0 }

    /// mpirun's arguments for running `program` with `arguments`.
    public func launcherArguments(program: String, arguments: [String]) -> [String] {
        var args: [String] = []
        if Self.isRoot { args.append("--allow-run-as-root") }
        // Shared memory within a host; across hosts also TCP, on the interfaces the job names,
        // and a peer that stops answering is dropped after the link timeout instead of being
        // waited for forever (Open MPI's default on a cut link).
        args += ["--oversubscribe", "--bind-to", "none", "--mca", "btl", spansHosts ? "self,vader,tcp" : "self,vader",
                 "--timeout", String(timeoutSeconds)]
        if spansHosts {
            if !interfaces.isEmpty {
                let list = interfaces.joined(separator: ",")
                args += ["--mca", "btl_tcp_if_include", list, "--mca", "oob_tcp_if_include", list]
            }
            if let rshAgent { args += ["--mca", "plm_rsh_agent", rshAgent] }
            args += Self.keepaliveArguments(linkTimeout: linkTimeoutSeconds)
        }
        args += extraArguments
        // One app context per run of consecutive ranks on one host, so rank r lands on the host
        // that owns chip r (all ranks here: one context). -x applies per context, so each carries
        // the environment.
        let exported = environment.keys.sorted().flatMap { ["-x", "\($0)=\(environment[$0]!)"] }
        for (index, context) in contexts.enumerated() {
            if index > 0 { args.append(":") }
            args += ["-np", String(context.ranks)]
            if let host = context.host { args += ["--host", "\(host):\(context.ranks)"] }
            args += exported
            args.append(program)
            args += arguments
        }
        return args
    }

    /// The placement as runs of consecutive ranks on one host (nil = here).
    var contexts: [(ranks: Int, host: String?)] {
        guard spansHosts, let placement else { return [(ranks, nil)] }
        var runs: [(ranks: Int, host: String?)] = []
        for host in placement {
            if let last = runs.last, last.host == host { runs[runs.count - 1].ranks += 1 } else { runs.append((1, host)) }
        }
        return runs
    }

    /// Open MPI's keepalive on its daemons' control connections (the `oob` TCP component; its
    /// MPI transport has none), so that a host that stops answering fails the job after about
    /// `linkTimeout` seconds (idle time, then probes one second apart) instead of hanging it.
    static func keepaliveArguments(linkTimeout: Double) -> [String] {
        let idle = max(1, Int(linkTimeout.rounded(.down)) / 2)
        let probes = max(1, Int(linkTimeout.rounded(.down)) - idle)
        return [
            "--mca", "oob_tcp_keepalive_time", String(idle), "--mca", "oob_tcp_keepalive_intvl", "1",
            "--mca", "oob_tcp_keepalive_probes", String(probes),
        ]
    }

    /// Runs `program` under mpirun and waits, at most `timeoutSeconds` + `graceSeconds`
    /// (then mpirun is killed); returns its status and output.
    /// `onOutput` sees mpirun's merged output as it arrives (see `ChildProcess.run`).
    public func run(
        program: String, arguments: [String], graceSeconds: Double = 30, forwardSignals: Bool = false,
        askToStop: ((Int32) -> Double)? = nil, abortWhen: (() -> Bool)? = nil, onOutput: ((String) -> Void)? = nil
    ) throws -> Outcome {
        var launcher = try Self.findLauncher()
        var launcherArguments = launcherArguments(program: program, arguments: arguments)
        if let shieldingExecutable {
            launcherArguments = ["exec-shielded", launcher] + launcherArguments
            launcher = shieldingExecutable
        }
        // Keep Open MPI quiet and local on CI boxes. hwloc's OpenCL component would load the
        // OpenCL drivers (PoCL's threads) into mpirun, which then crashes at a SIGTERM: mpirun
        // needs no GPU topology.
        var env: [String: String] = ["OMPI_MCA_rmaps_base_oversubscribe": "1"]
        if ProcessInfo.processInfo.environment["HWLOC_COMPONENTS"] == nil { env["HWLOC_COMPONENTS"] = "-opencl" }
        if ProcessInfo.processInfo.environment["PMIX_MCA_gds"] == nil { env["PMIX_MCA_gds"] = "hash" }
        let child = try ChildProcess.run(
            launcher, launcherArguments, environment: env,
            timeoutSeconds: Double(timeoutSeconds) + graceSeconds, mergeOutput: true, killGraceSeconds: 2,
            // Output is shown every 50 ms: fast enough to watch, few wake-ups of the launcher.
            forwardSignals: forwardSignals, askToStop: askToStop, pollSeconds: 0.05, abortWhen: abortWhen, onOutput: onOutput)
        return Outcome(status: child.status, output: child.stdout, killedAtDeadline: child.timedOut,
                       seconds: child.seconds, interruptedBy: child.interruptedBy, aborted: child.aborted,
                       killedFromOutside: child.killedFromOutside)
    }
}

