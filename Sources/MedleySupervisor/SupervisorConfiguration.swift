import MedleyCore

/// How the supervisor judges a job's ranks (the spec's `supervise:` settings and `medley launch`
/// flags end up here).
public struct SupervisorConfiguration: Sendable, Hashable {
    /// Ranks the job starts; each is expected to say hello.
    public var ranks: Int
    /// Seconds without a heartbeat after which a rank is reported as silent (hung or gone).
    public var heartbeatTimeout: Double
    /// A rank whose step time exceeds `stragglerFactor` × the median of the ranks' step times
    /// for `stragglerSteps` steps in a row is reported as a straggler.
    public var stragglerFactor: Double
    public var stragglerSteps: Int
    /// A rank whose compute time per sequence exceeds `slowdownFactor` × its own at the start of
    /// the attempt for `stragglerSteps` steps in a row has slowed down (a chip that throttles or
    /// degrades): a `slowdown` alert.
    public var slowdownFactor: Double
    /// Seconds a rank may take from the start of the job to its hello.
    public var helloTimeout: Double

    /// A configuration; the defaults are what `medley launch` uses.
    public init(ranks: Int, heartbeatTimeout: Double = 10, stragglerFactor: Double = 2, stragglerSteps: Int = 5,
                helloTimeout: Double = 120, slowdownFactor: Double = 3) {
        self.slowdownFactor = slowdownFactor
        self.ranks = ranks
        self.heartbeatTimeout = heartbeatTimeout
        self.stragglerFactor = stragglerFactor
        self.stragglerSteps = stragglerSteps
        self.helloTimeout = helloTimeout
    }

    /// Throws one line naming the first setting out of range.
    public func validate() throws {
        func fail(_ name: String, _ rule: String, _ value: CustomStringConvertible) -> MedleyError {
            MedleyError(.invalidArgument, "supervise.\(name) must be \(rule), got \(value)")
        }
        guard ranks >= 1 else { throw fail("ranks", "at least 1", ranks) }
        guard heartbeatTimeout.isFinite, heartbeatTimeout > 0 else { throw fail("heartbeat_timeout", "a number of seconds above 0", heartbeatTimeout) }
        guard stragglerFactor.isFinite, stragglerFactor > 1 else { throw fail("straggler_factor", "a number above 1", stragglerFactor) }
        guard stragglerSteps >= 1 else { throw fail("straggler_steps", "at least 1", stragglerSteps) }
        guard slowdownFactor.isFinite, slowdownFactor > 1 else { throw fail("slowdown_factor", "a number above 1", slowdownFactor) }
        guard helloTimeout.isFinite, helloTimeout > 0 else { throw fail("hello_timeout", "a number of seconds above 0", helloTimeout) }
    }
}
