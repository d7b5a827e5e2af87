import Foundation
import MedleyCore

extension Plan {
    /// A plan written by hand (or by a test): replicas of stages `(device, planning layers)`,
    /// each with its samples; predictions are left at zero.
    public static func manual(
        globalBatch: Int, microbatchSize: Int, replicas: [(samples: Int, stages: [(device: Int, layers: Range<Int>)])],
        slack: Int = Plan.defaultSlack
    ) -> Plan {
        let built = replicas.map { replica in
            Replica(
                stages: replica.stages.map {
                    Stage(
                        device: $0.device, chip: "", firstLayer: $0.layers.lowerBound, endLayer: $0.layers.upperBound,
                        forwardMs: 0, backwardMs: 0, memoryBytes: 0, freeBytes: 0)
                },
                samples: replica.samples, microbatches: (replica.samples + microbatchSize - 1) / max(microbatchSize, 1))
        }
        return Plan(
            schedule: "1F1B", slack: slack, globalBatch: globalBatch, microbatchSize: microbatchSize, replicas: built, leftOut: [],
            prediction: Prediction(
                stepMs: 0, computeMs: 0, exchangeMs: 0, optimizerMs: 0, bubbleFraction: 0, tokensPerSecond: 0,
                homogeneousTokensPerSecond: 0, efficiency: 0))
    }

    /// Throws one line naming the first problem that stops this plan from running a model of
    /// `blocks` transformer blocks on `devices` devices with global batch `globalBatch`:
    /// a device used twice or out of range, a replica whose stages do not cover the planning
    /// layers 0 ..< blocks + 2 in order without gaps, samples that do not add up, a bad
    /// microbatch size or count, an unknown schedule.
    public func validate(blocks: Int, devices: Int, globalBatch: Int) throws {
        func fail(_ message: String) -> MedleyError { MedleyError(.invalidArgument, "plan: \(message)") }
        guard schedule == "1F1B" else { throw fail("schedule '\(schedule)' is not supported; use 1F1B") }
        guard slack >= 0 && slack <= Plan.maxSlack else { throw fail("slack must be in 0...\(Plan.maxSlack), got \(slack)") }
        guard microbatchSize >= 1 else { throw fail("microbatch_size must be at least 1, got \(microbatchSize)") }
        guard !replicas.isEmpty else { throw fail("it has no replicas") }
        guard self.globalBatch == globalBatch else {
            throw fail("it was made for a global batch of \(self.globalBatch) but the job's model.batch is \(globalBatch); plan again")
        }
        let layers = blocks + 2
        var used = Set<Int>()
        for (r, replica) in replicas.enumerated() {
            guard !replica.stages.isEmpty else { throw fail("replica \(r) has no stages") }
            var next = 0
            for (s, stage) in replica.stages.enumerated() {
                guard stage.device >= 0, stage.device < devices else {
                    throw fail("replica \(r) stage \(s) uses device \(stage.device), but the job has devices 0..<\(devices)")
                }
                guard used.insert(stage.device).inserted else {
                    throw fail("device \(stage.device) appears in more than one stage; each device runs one stage")
                }
                guard stage.firstLayer == next, stage.endLayer > stage.firstLayer else {
                    throw fail(
                        "replica \(r) stage \(s) holds layers \(stage.firstLayer)..<\(stage.endLayer), expected a non-empty range starting at \(next) (stages cover 0..<\(layers) in order)")
                }
                next = stage.endLayer
            }
            guard next == layers else {
                throw fail("replica \(r)'s stages end at layer \(next), but the model has planning layers 0..<\(layers) (\(blocks) blocks + embedding + head)")
            }
            guard replica.samples >= 0 else { throw fail("replica \(r) has \(replica.samples) samples; at least 0") }
            let expected = (replica.samples + microbatchSize - 1) / microbatchSize
            guard replica.microbatches == expected else {
                throw fail("replica \(r) has \(replica.microbatches) microbatches; \(replica.samples) samples in microbatches of \(microbatchSize) make \(expected)")
            }
        }
        let total = replicas.reduce(0) { $0 + $1.samples }
        guard total == globalBatch else {
            throw fail("the replicas' samples sum to \(total), but the global batch is \(globalBatch)")
        }
    }

    /// Devices the plan runs, in the order of their replicas and stages.
    public var usedDevices: [Int] { replicas.flatMap { $0.stages.map(\.device) } }

    /// True when every replica is one stage holding the whole model (plain data parallelism).
    public var isDataParallel: Bool { replicas.allSatisfy { $0.stages.count == 1 } }

    /// The plan with its devices renumbered by `map` (old index → new index).
    public func renumbered(_ map: [Int: Int]) -> Plan {
        var copy = self
        for r in copy.replicas.indices {
            for s in copy.replicas[r].stages.indices {
                copy.replicas[r].stages[s].device = map[copy.replicas[r].stages[s].device] ?? -1
            }
        }
        return copy
    }

    /// The microbatch sizes of a replica with `samples` sequences: full microbatches, then the rest.
    /// Microbatches stage `s` of replica `r` keeps in flight under this plan's slack.
    public func inFlight(replica r: Int, stage s: Int) -> Int {
        Plan.inFlight(stagesAfter: replicas[r].stages.count - 1 - s, microbatches: replicas[r].microbatches, slack: slack)
    }

    /// Forwards stage `s` of replica `r` runs before its first backward under this plan's slack.
    public func warmupForwards(replica r: Int, stage s: Int) -> Int {
        Plan.warmupForwards(stagesAfter: replicas[r].stages.count - 1 - s, microbatches: replicas[r].microbatches, slack: slack)
    }

    public func microbatchSizes(samples: Int) -> [Int] {
        guard samples > 0 else { return [] }
        var sizes = [Int](repeating: microbatchSize, count: samples / microbatchSize)
        if samples % microbatchSize > 0 { sizes.append(samples % microbatchSize) }
        return sizes
    }
}

extension Plan {
    /// The plan as JSON (keys sorted), what `medley plan --json` prints and a job's `plan:` file holds.
    public func jsonData() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(self)
    }

    /// Reads a plan file written by ``jsonData()``; throws one line naming the file and the problem.
    public static func load(path: String) throws -> Plan {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw MedleyError(.notFound, "plan file \(path) does not exist or cannot be read; write one with `medley plan JOB --json > FILE`")
        }
        do {
            return try JSONDecoder().decode(Plan.self, from: data)
        } catch let DecodingError.keyNotFound(key, context) {
            throw MedleyError(.invalidArgument, "plan file \(path): missing '\(key.stringValue)' at \(Self.path(context)); write it with `medley plan JOB --json`")
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context) {
            throw MedleyError(.invalidArgument, "plan file \(path): wrong value at \(Self.path(context)): \(context.debugDescription)")
        } catch {
            throw MedleyError(.invalidArgument, "plan file \(path) is not a plan (JSON from `medley plan JOB --json`): \(error.localizedDescription)")
        }
    }

    private static func path(_ context: DecodingError.Context) -> String {
        let keys = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
        return keys.isEmpty ? "the top level" : String(keys.drop(while: { $0 == "." }))
    }
}
