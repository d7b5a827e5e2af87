/// A plan as the searches see it: classes of identical pipelines (same chip
/// types in the same order, same split), at one microbatch size.
struct Candidate: Sendable {
    struct PipelineKind: Sendable {
        /// Chip type (profile index) of each stage.
        var word: [Int]
        var split: SplitPoint
        /// Replicas of this kind.
        var count: Int
    }

    var microbatch: Int
    /// Predicted step: least compute time + the slowest rank's update.
    var stepMs: Double
    var kinds: [PipelineKind]

    var replicas: Int { kinds.reduce(0) { $0 + $1.count } }
    var devicesUsed: Int { kinds.reduce(0) { $0 + $1.count * $1.word.count } }

    /// Devices of profile `type` the candidate uses.
    func devices(of type: Int) -> Int {
        kinds.reduce(0) { sum, kind in sum + kind.count * kind.word.reduce(0) { $0 + ($1 == type ? 1 : 0) } }
    }

    /// Whether `self` is a better plan than `other`: a shorter step, or (within 1e-9) fewer
    /// devices, then fewer replicas. Earlier candidates win remaining ties, so a search that
    /// visits candidates in a fixed order gives the same answer every time.
    func beats(_ other: Candidate?) -> Bool {
        guard let other else { return true }
        let tolerance = 1e-9 * max(stepMs, other.stepMs)
        if stepMs < other.stepMs - tolerance { return true }
        if stepMs > other.stepMs + tolerance { return false }
        if devicesUsed != other.devicesUsed { return devicesUsed < other.devicesUsed }
        return replicas < other.replicas
    }
}

/// The plan search over one set of chip types: the best candidate, and for each
/// type the best step found with each number of its devices in use (to explain
/// left-out chips).
struct PlanSearch {
    let model: StepTimeModel
    /// Profile indices taking part, ascending, and how many devices of each.
    let types: [Int]
    let counts: [Int]
    let batch: Int
    /// Most stages in one pipeline.
    let maxStages: Int
    let microbatchSizes: [Int]

    /// Largest search the exhaustive strategy takes on: devices, planning layers (Pareto fronts
    /// grow with them), compositions of pipelines, and distinct chip sequences times layers².
    static let exhaustiveDevices = 16
    static let exhaustiveLayers = 34
    static let exhaustiveCompositions = 20_000
    static let exhaustiveFrontWork = 400_000

    private(set) var best: Candidate?
    /// `bestWith[i][k]`: least step found using exactly k devices of `types[i]`.
    private(set) var bestWith: [[Double]]
    /// Whether the exhaustive strategy ran (else the template strategy).
    private(set) var exhaustive = false
    /// Per type: whether the template strategy found pipelines of that type alone at some microbatch size so far.
    var formsPipelines: [Bool]

    init(model: StepTimeModel, types: [Int], counts: [Int], batch: Int, maxStages: Int, microbatchSizes: [Int]) {
        self.model = model
        self.types = types
        self.counts = counts
        self.batch = batch
        self.maxStages = min(maxStages, model.layerCount)
        self.microbatchSizes = microbatchSizes
        bestWith = counts.map { [Double](repeating: .infinity, count: $0 + 1) }
        formsPipelines = counts.map { _ in false }
    }

    /// Runs the search at every microbatch size, ascending: exhaustive over every composition of
    /// pipelines when that is small, else over templates (replicated pipelines per chip type),
    /// which stops raising the microbatch once two sizes in a row bring no improvement.
    mutating func run() {
        let layers = model.layerCount
        var words: [[Int]] = []
        if counts.reduce(0, +) <= Self.exhaustiveDevices && layers <= Self.exhaustiveLayers {
            words = Self.groupedWords(counts: counts, maxLength: maxStages)
            let frontWork = words.reduce(0) { $0 + $1.count } * layers * layers
            exhaustive = frontWork <= Self.exhaustiveFrontWork
                && Self.countCompositions(words: words, counts: counts, limit: Self.exhaustiveCompositions + 1)
                    <= Self.exhaustiveCompositions
        }
        var sinceImproved = 0
        for b in microbatchSizes.sorted() {
            let before = best?.stepMs
            let costs = StageCosts(model, microbatch: b)
            if exhaustive {
                searchExhaustively(words: words, costs: costs)
            } else {
                searchTemplates(costs: costs)
                // Larger microbatches shorten the stages' fixed costs but lengthen the bubble and need
                // more memory; once two sizes in a row do not improve, larger ones are not tried.
                sinceImproved = best?.stepMs == before ? sinceImproved + 1 : 0
                if before != nil && sinceImproved >= Self.templateMicrobatchPatience { break }
            }
        }
    }

    /// Microbatch sizes in a row that may fail to improve the template search before it stops.
    static let templateMicrobatchPatience = 2

    /// Records `candidate` as seen: keeps it if best, and notes its step per type count.
    mutating func consider(_ candidate: Candidate) {
        for (i, type) in types.enumerated() {
            let k = candidate.devices(of: type)
            bestWith[i][k] = min(bestWith[i][k], candidate.stepMs)
        }
        if candidate.beats(best) { best = candidate }
    }

    // MARK: Chip sequences

    /// Every pipeline of at most `maxLength` stages whose chips are grouped by type (all stages
    /// of one type adjacent), within the device counts, as per-stage positions into `counts`,
    /// in a fixed order: by count vector, then by type order.
    static func groupedWords(counts: [Int], maxLength: Int) -> [[Int]] {
        var words: [[Int]] = []
        var vector = [Int](repeating: 0, count: counts.count)
        func visit(_ i: Int, _ length: Int) {
            if i == counts.count {
                guard length > 0 else { return }
                let present = (0..<counts.count).filter { vector[$0] > 0 }
                for order in permutations(present) {
                    words.append(order.flatMap { [Int](repeating: $0, count: vector[$0]) })
                }
                return
            }
            for k in 0...min(counts[i], maxLength - length) {
                vector[i] = k
                visit(i + 1, length + k)
            }
            vector[i] = 0
        }
        visit(0, 0)
        return words
    }

    /// Every order of `items`, lexicographic by position.
    static func permutations(_ items: [Int]) -> [[Int]] {
        guard items.count > 1 else { return [items] }
        return items.indices.flatMap { i -> [[Int]] in
            var rest = items
            let first = rest.remove(at: i)
            return permutations(rest).map { [first] + $0 }
        }
    }

    /// Multisets of words (pipelines) that fit the device counts, counted up to `limit`.
    static func countCompositions(words: [[Int]], counts: [Int], limit: Int) -> Int {
        let usage = words.map { word in counts.indices.map { t in word.filter { $0 == t }.count } }
        var remaining = counts
        var found = 0
        func visit(_ from: Int) {
            for w in from..<words.count where found < limit {
                guard usage[w].indices.allSatisfy({ usage[w][$0] <= remaining[$0] }) else { continue }
                for t in remaining.indices { remaining[t] -= usage[w][t] }
                found += 1
                visit(w)
                for t in remaining.indices { remaining[t] += usage[w][t] }
            }
        }
        visit(0)
        return found
    }
}
