extension PlanSearch {
    /// Every composition of pipelines (a multiset of grouped chip sequences within the device
    /// counts, at most one replica per sequence of the batch), each pipeline kind with every
    /// Pareto-optimal split, at microbatch size `costs.microbatch`; the best is exact for the
    /// plan space (see docs/planning.md).
    ///
    /// For a composition of R replicas, each stage's update time u (exchange + optimizer, which
    /// depends on R and on how many replicas are cut into stages) is known per split, and the step is C + U with U the largest u. For each
    /// threshold U (a distinct u of the fronts, ascending) the least compute time C(U) using only
    /// splits with u ≤ U is a share allocation; the step is min over U of C(U) + U. C(U) never
    /// grows with U, so the loop stops once U + C(∞) cannot beat the best.
    mutating func searchExhaustively(words positions: [[Int]], costs: StageCosts) {
        let b = costs.microbatch
        let need = (batch + b - 1) / b
        let words = positions.map { $0.map { types[$0] } }
        let usage = positions.map { word in counts.indices.map { t in word.filter { $0 == t }.count } }
        // Fronts per (word, holders), computed when first needed; a word with no split that fits is dropped.
        struct Key: Hashable { var word: Int, holders: StepTimeModel.Holders }
        var fronts: [Key: [SplitPoint]] = [:]
        func front(_ w: Int, _ holders: StepTimeModel.Holders) -> [SplitPoint] {
            if let known = fronts[Key(word: w, holders: holders)] { return known }
            let computed = SplitSearch.front(word: words[w], costs: costs, holders: holders).sorted {
                $0.update != $1.update ? $0.update < $1.update : $0.largest < $1.largest
            }
            fronts[Key(word: w, holders: holders)] = computed
            return computed
        }
        let usable = words.indices.filter { !front($0, .init(replicas: 1, table: 1)).isEmpty }

        var chosen: [Int] = []
        var chosenUsage = counts.map { _ in 0 }
        var remaining = counts
        func evaluate() {
            // Distinct words with multiplicity, in order.
            var kinds: [(word: Int, count: Int)] = []
            for w in chosen {
                if let last = kinds.last, last.word == w { kinds[kinds.count - 1].count += 1 } else { kinds.append((w, 1)) }
            }
            let holders = StepTimeModel.Holders(stageCounts: chosen.map { words[$0].count })
            let points = kinds.map { front($0.word, holders) }
            let all = zip(points, kinds).map { PipelineClass(shapes: $0.map(\.shape), count: $1.count) }
            guard let unbounded = MicrobatchAllocation.minimalComputeMs(all, need: need) else { return }
            let thresholds = Array(Set(points.flatMap { $0.map(\.update) })).sorted()
            // The composition only matters if it can beat the best step seen with its number of devices of some type.
            var worthBeating = 0.0
            for i in types.indices { worthBeating = max(worthBeating, bestWith[i][chosenUsage[i]]) }
            var found: Candidate?
            for limit in thresholds {
                if limit + unbounded.ms >= min(found?.stepMs ?? .infinity, worthBeating) { break }
                // Each front is sorted by update, so the allowed splits are a prefix.
                let allowed = points.map { $0.prefix { $0.update <= limit } }
                guard allowed.allSatisfy({ !$0.isEmpty }) else { continue }
                let classes = zip(allowed, kinds).map { PipelineClass(shapes: $0.map(\.shape), count: $1.count) }
                guard let compute = MicrobatchAllocation.minimalComputeMs(classes, need: need) else { continue }
                let splits = compute.shapes.enumerated().map { allowed[$0][allowed[$0].startIndex + $1] }
                let update = splits.map(\.update).max()!
                let candidate = Candidate(
                    microbatch: b, stepMs: compute.ms + update,
                    kinds: zip(kinds, splits).map { .init(word: words[$0.word], split: $1, count: $0.count) })
                if candidate.stepMs < (found?.stepMs ?? .infinity) { found = candidate }
            }
            if let found { consider(found) }
        }
        func visit(_ from: Int) {
            for i in from..<usable.count {
                let w = usable[i]
                guard chosen.count < batch, usage[w].indices.allSatisfy({ usage[w][$0] <= remaining[$0] }) else { continue }
                for t in remaining.indices { remaining[t] -= usage[w][t]; chosenUsage[t] += usage[w][t] }
                chosen.append(w)
                evaluate()
                visit(i)
                chosen.removeLast()
                for t in remaining.indices { remaining[t] += usage[w][t]; chosenUsage[t] -= usage[w][t] }
            }
        }
        visit(0)
    }
}
