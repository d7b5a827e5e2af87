/// One split of a pipeline's layers into contiguous stages, with what the
/// planner needs to compare splits.
struct SplitPoint: Sendable {
    /// The slowest stage's and the sum of the stages' forward + backward ms per microbatch.
    var largest: Double
    var sum: Double
    /// The slowest stage's gradient exchange + optimizer ms (for given holder counts).
    var update: Double
    /// `ends[s]`: one past the last planning layer of stage s (the last is the layer count).
    var ends: [Int]

    var shape: PipelineShape { PipelineShape(largest: largest, sum: sum) }
}

/// Dynamic programs over contiguous layer splits of one pipeline whose stages
/// run on the chip types `word` (stage s on `word[s]`), at one microbatch size.
/// Stage s of p keeps p − s microbatches in flight (1F1B); a stage that does not
/// fit its chip is never produced.
enum SplitSearch {
    /// Every split that is best for some trade-off between the slowest stage, the sum of
    /// stages and the slowest update: the Pareto front of (largest, sum, update), sorted by
    /// largest. Exact; for small models (its cost grows with layers² × front size).
    static func front(word: [Int], costs: StageCosts, holders: StepTimeModel.Holders) -> [SplitPoint] {
        let n = costs.layerCount, p = word.count
        guard p >= 1 && p <= n else { return [] }
        var states = [[SplitPoint]](repeating: [], count: n + 1)
        for e in 1...(n - p + 1) where costs.fits(word[0], 0, e, inFlight: p) {
            let c = costs.ms(word[0], 0, e)
            states[e] = [SplitPoint(largest: c, sum: c, update: costs.updateMs(word[0], 0, e, holders), ends: [e])]
        }
        for s in 1..<p {
            var next = [[SplitPoint]](repeating: [], count: n + 1)
            for e in (s + 1)...(n - (p - 1 - s)) {
                var candidates: [SplitPoint] = []
                for a in s..<e where !states[a].isEmpty && costs.fits(word[s], a, e, inFlight: p - s) {
                    let c = costs.ms(word[s], a, e)
                    let u = costs.updateMs(word[s], a, e, holders)
                    for q in states[a] {
                        candidates.append(SplitPoint(
                            largest: max(q.largest, c), sum: q.sum + c, update: max(q.update, u), ends: q.ends + [e]))
                    }
                }
                next[e] = pareto(candidates)
            }
            states = next
        }
        return states[n]
    }

    /// The points no other point beats on all three of largest, sum and update; ties keep the
    /// split that ends its stages earliest, so the result does not depend on input order.
    static func pareto(_ points: [SplitPoint]) -> [SplitPoint] {
        let sorted = points.sorted {
            if $0.largest != $1.largest { return $0.largest < $1.largest }
            if $0.sum != $1.sum { return $0.sum < $1.sum }
            if $0.update != $1.update { return $0.update < $1.update }
            return $0.ends.lexicographicallyPrecedes($1.ends)
        }
        var kept: [SplitPoint] = []
        for point in sorted where !kept.contains(where: { $0.sum <= point.sum && $0.update <= point.update }) {
            kept.append(point)
        }
        return kept
    }

    /// The split with the smallest slowest stage and, among those, the smallest sum of stage
    /// times (two dynamic programs, each pruned once a stage is too slow or too large), or nil
    /// when no split fits. `update` is left 0 (it depends on the replica count).
    ///
    /// With `updateCap`, only stages whose exchange + optimizer time for `holders` is at most the
    /// cap are allowed (a stage's update only grows as its range grows, so the scans stop there):
    /// the least slowest stage among splits whose slowest update is within the cap.
    static func balanced(
        word: [Int], costs: StageCosts, updateCap: Double = .infinity, holders: StepTimeModel.Holders? = nil
    ) -> SplitPoint? {
        let n = costs.layerCount, p = word.count
        guard p >= 1 && p <= n else { return nil }
        let memory = word.map { costs.model.inventory.profiles[$0].memoryBytes }
        // Under a cap: `lowest[t][e]`, the first layer a stage of type t ending at e may start at
        // (e + 1 when none; n + 1 rows, computed once per type).
        var lowest: [[Int]] = []
        if let holders, updateCap.isFinite {
            lowest = [[Int]](repeating: [], count: costs.model.inventory.profiles.count)
            for t in Set(word) {
                func allowed(_ a: Int, _ e: Int) -> Bool { costs.updateMs(t, a, e, holders) <= updateCap }
                var row = [Int](repeating: 0, count: n + 1)
                // Away from the ends a stage's update grows with its end and falls with its start, so
                // the first allowed start only moves forward; the ends (which may hold the table) are checked apart.
                var first = 1
                for e in 1..<n {
                    while first < e && !allowed(first, e) { first += 1 }
                    row[e] = first < e ? (first == 1 && allowed(0, e) ? 0 : first) : (allowed(0, e) && e == 1 ? 0 : e + 1)
                }
                var a = n
                while a > 0 && allowed(a - 1, n) { a -= 1 }
                row[n] = a == n ? n + 1 : a
                lowest[t] = row
            }
        }
        func withinCap(_ s: Int, _ a: Int, _ e: Int) -> Bool { lowest.isEmpty || a >= lowest[word[s]][e] }
        // Pass 1: least possible slowest stage. worst[e]: best max over stages 0...s covering 0..<e.
        var worst = [Double](repeating: .infinity, count: n + 1)
        for e in 1...(n - p + 1) {
            if costs.memoryLowerBound(0, e, inFlight: p) > memory[0] || !withinCap(0, 0, e) { break }
            if costs.fits(word[0], 0, e, inFlight: p) { worst[e] = costs.ms(word[0], 0, e) }
        }
        for s in 1..<p {
            var next = [Double](repeating: .infinity, count: n + 1)
            for e in (s + 1)...(n - (p - 1 - s)) {
                var best = Double.infinity
                var a = e - 1
                while a >= s {
                    if costs.computeOnlyMs(word[s], a, e) >= best { break }
                    if costs.memoryLowerBound(a, e, inFlight: p - s) > memory[s] || !withinCap(s, a, e) { break }
                    if worst[a] < best && costs.fits(word[s], a, e, inFlight: p - s) {
                        best = min(best, max(worst[a], costs.ms(word[s], a, e)))
                    }
                    a -= 1
                }
                next[e] = best
            }
            worst = next
        }
        let bound = worst[n]
        guard bound.isFinite else { return nil }
        let limit = bound * (1 + 1e-12)
        // Pass 2: least sum of stage times with every stage within the bound.
        var total = [Double](repeating: .infinity, count: n + 1)
        var from = [[Int]](repeating: [Int](repeating: -1, count: n + 1), count: p)
        for e in 1...(n - p + 1) {
            if costs.memoryLowerBound(0, e, inFlight: p) > memory[0] || costs.computeOnlyMs(word[0], 0, e) > limit
                || !withinCap(0, 0, e) { break }
            let c = costs.ms(word[0], 0, e)
            if c <= limit && costs.fits(word[0], 0, e, inFlight: p) { total[e] = c; from[0][e] = 0 }
        }
        for s in 1..<p {
            var next = [Double](repeating: .infinity, count: n + 1)
            for e in (s + 1)...(n - (p - 1 - s)) {
                var a = e - 1
                while a >= s {
                    if costs.computeOnlyMs(word[s], a, e) > limit { break }
                    if costs.memoryLowerBound(a, e, inFlight: p - s) > memory[s] || !withinCap(s, a, e) { break }
                    if total[a].isFinite {
                        let c = costs.ms(word[s], a, e)
                        if c <= limit && total[a] + c < next[e] && costs.fits(word[s], a, e, inFlight: p - s) {
                            next[e] = total[a] + c
                            from[s][e] = a
                        }
                    }
                    a -= 1
                }
            }
            total = next
        }
        guard total[n].isFinite else { return nil }
        var ends = [Int](repeating: n, count: p)
        var e = n
        for s in stride(from: p - 1, through: 0, by: -1) {
            ends[s] = e
            e = from[s][e]
        }
        var largest = 0.0, sum = 0.0, start = 0
        for (s, end) in ends.enumerated() {
            let c = costs.ms(word[s], start, end)
            largest = max(largest, c)
            sum += c
            start = end
        }
        return SplitPoint(largest: largest, sum: sum, update: 0, ends: ends)
    }

    /// Splits of pipelines of 1, 2, … `deepest` chips of type `type`, all from one dynamic program:
    /// `result[p]` is the split of depth p (nil when none fits; `result[0]` is nil).
    ///
    /// It runs from the last stage backwards: the stage r places from the end keeps r + 1
    /// microbatches in flight whatever the depth, so the best way to cover layers `a..<N` with
    /// r + 1 stages serves every depth. Each state keeps the least (slowest stage, sum of stages)
    /// in that order: the slowest stage is exactly the least possible, the sum a tie-break.
    static func homogeneous(type t: Int, costs: StageCosts, deepest: Int) -> [SplitPoint?] {
        let n = costs.layerCount
        let depth = min(deepest, n)
        guard depth >= 1 else { return [nil] }
        let memory = costs.model.inventory.profiles[t].memoryBytes
        // best[r][a]: (largest, sum) covering a..<n with r + 1 stages; end[r][a]: where the stage at a ends.
        var largest = [[Double]](repeating: [Double](repeating: .infinity, count: n + 1), count: depth)
        var sum = largest
        var end = [[Int]](repeating: [Int](repeating: -1, count: n + 1), count: depth)
        for a in 0..<n where costs.fits(t, a, n, inFlight: 1) {
            let c = costs.ms(t, a, n)
            (largest[0][a], sum[0][a], end[0][a]) = (c, c, n)
        }
        if depth > 1 {
            for r in 1..<depth {
                // The first stage counted from here starts at a ≤ n - r - 1 and ends at e ≤ n - r.
                for a in stride(from: n - r - 1, through: 0, by: -1) {
                    var bestLargest = Double.infinity, bestSum = Double.infinity, bestEnd = -1
                    for e in (a + 1)...(n - r) {
                        let floor = costs.computeOnlyMs(t, a, e)
                        if floor > bestLargest { break }
                        if costs.memoryLowerBound(a, e, inFlight: r + 1) > memory { break }
                        let tail = largest[r - 1][e]
                        guard tail.isFinite, costs.fits(t, a, e, inFlight: r + 1) else { continue }
                        let c = costs.ms(t, a, e)
                        let l = max(c, tail), s = c + sum[r - 1][e]
                        if l < bestLargest || (l == bestLargest && s < bestSum) { (bestLargest, bestSum, bestEnd) = (l, s, e) }
                    }
                    (largest[r][a], sum[r][a], end[r][a]) = (bestLargest, bestSum, bestEnd)
                }
            }
        }
        var result: [SplitPoint?] = [nil]
        for p in 1...depth {
            guard largest[p - 1][0].isFinite else {
                result.append(nil)
                continue
            }
            var ends: [Int] = []
            var a = 0
            for r in stride(from: p - 1, through: 0, by: -1) {
                a = end[r][a]
                ends.append(a)
            }
            result.append(SplitPoint(largest: largest[p - 1][0], sum: sum[p - 1][0], update: 0, ends: ends))
        }
        return result + [SplitPoint?](repeating: nil, count: max(0, deepest - depth))
    }

    /// The slowest update (exchange + optimizer) among the stages of `ends` on `word`.
    static func update(word: [Int], ends: [Int], costs: StageCosts, holders: StepTimeModel.Holders) -> Double {
        var worst = 0.0, start = 0
        for (s, end) in ends.enumerated() {
            worst = max(worst, costs.updateMs(word[s], start, end, holders))
            start = end
        }
        return worst
    }

    /// The least memory the fullest stage needs when the model is split into `stages` stages at
    /// microbatch 1 (whatever the chips): what the smallest chip of a plan must at least hold.
    static func leastPeakMemory(stages p: Int, costs: StageCosts) -> Int {
        let n = costs.layerCount
        let p = min(max(p, 1), n)
        var worst = [Int](repeating: .max, count: n + 1)
        for e in 1...(n - p + 1) { worst[e] = costs.memoryBytes(0, e, inFlight: p) }
        for s in 1..<p {
            var next = [Int](repeating: .max, count: n + 1)
            for e in (s + 1)...(n - (p - 1 - s)) {
                for a in s..<e where worst[a] != .max {
                    next[e] = min(next[e], max(worst[a], costs.memoryBytes(a, e, inFlight: p - s)))
                }
            }
            worst = next
        }
        return worst[n]
    }
}
