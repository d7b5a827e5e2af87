/// One way to split a replica's layers, seen by the share allocation: the sum
/// and the largest of its stage times (ms per microbatch).
struct PipelineShape: Sendable {
    var largest: Double
    var sum: Double

    /// Pipeline milliseconds for `m` ≥ 1 microbatches under 1F1B.
    func ms(microbatches m: Int) -> Double { sum + Double(m - 1) * largest }

    /// The most microbatches that finish within `deadline` ms (0 when not even one does), at most `cap`.
    func microbatches(within deadline: Double, cap: Int) -> Int {
        guard deadline >= sum else { return 0 }
        let estimate = ((deadline - sum) / largest).rounded(.down)
        var m = estimate >= Double(cap) ? cap : Int(estimate) + 1
        while m > 0 && ms(microbatches: m) > deadline { m -= 1 }
        while m < cap && ms(microbatches: m + 1) <= deadline { m += 1 }
        return min(m, cap)
    }
}

/// `count` identical replicas that may use any of `shapes` (all replicas of a class use the same one).
struct PipelineClass: Sendable {
    var shapes: [PipelineShape]
    var count: Int
}

/// Dividing the global batch among replicas in whole microbatches so that the
/// slowest replica finishes as early as possible.
///
/// With microbatch size b the batch needs `need` = ⌈B/b⌉ microbatches; every
/// replica trains at least one. Replica r running mᵣ microbatches takes
/// Tᵣ(mᵣ) = Sᵣ + (mᵣ − 1)·Mᵣ, increasing in mᵣ, so the least possible compute
/// time is the smallest deadline C ≥ maxᵣ Tᵣ(1) by which the replicas together
/// can finish `need` microbatches: the `need`-th smallest of all the values
/// Tᵣ(m). It is found by bisection on C, counting microbatches per class.
enum MicrobatchAllocation {
    /// The least compute time, and the shape each class uses for it; nil when there are no classes.
    static func minimalComputeMs(_ classes: [PipelineClass], need: Int) -> (ms: Double, shapes: [Int])? {
        guard !classes.isEmpty else { return nil }
        // Fastest single microbatch per class; every replica must run one.
        var base = 0.0
        for c in classes { base = max(base, c.shapes.map(\.sum).min()!) }
        if need <= exactLimit { return exactComputeMs(classes, need: need, base: base) }
        // Microbatches the replicas finish by `deadline` (saturating above `need`), each class on its best shape.
        func total(_ deadline: Double) -> Int {
            var total = 0
            for c in classes {
                var best = 0
                for shape in c.shapes { best = max(best, shape.microbatches(within: deadline, cap: need)) }
                total = min(need &* 2 &+ 2, total + c.count * best)
            }
            return total
        }
        var hi = base
        if total(base) < need {
            for c in classes { hi = max(hi, c.shapes.map { $0.ms(microbatches: need) }.min()!) }
            var lo = base
            // To 1e-12 of the deadline: the answer is then the latest finishing time at `hi` (below).
            while hi - lo > 1e-12 * hi {
                let mid = lo + (hi - lo) / 2
                if mid <= lo || mid >= hi { break }
                if total(mid) >= need { hi = mid } else { lo = mid }
            }
        }
        // The deadline actually used: the latest finishing time among the replicas at `hi`.
        var ms = base
        var shapes: [Int] = []
        for c in classes {
            var best = 0, bestShape = 0
            for (i, shape) in c.shapes.enumerated() {
                let m = shape.microbatches(within: hi, cap: need)
                if m > best { (best, bestShape) = (m, i) }
            }
            shapes.append(bestShape)
            if best > 0 { ms = max(ms, c.shapes[bestShape].ms(microbatches: best)) }
        }
        return (ms, shapes)
    }

    /// Batches of at most this many microbatches are allocated by merging the replicas' finishing
    /// times in order (exact); larger ones by bisection on the deadline.
    static let exactLimit = 256

    /// The `need`-th smallest finishing time over all replicas and microbatch counts, but at least
    /// `base` (every replica runs one): replicas of a class finish their m-th microbatch together,
    /// so the classes' sequences are merged with a heap.
    private static func exactComputeMs(_ classes: [PipelineClass], need: Int, base: Double) -> (ms: Double, shapes: [Int]) {
        func finish(_ c: PipelineClass, _ m: Int) -> (ms: Double, shape: Int) {
            var best = (ms: Double.infinity, shape: 0)
            for (i, shape) in c.shapes.enumerated() where shape.ms(microbatches: m) < best.ms { best = (shape.ms(microbatches: m), i) }
            return best
        }
        var deadline = base
        var done = classes.reduce(0) { $0 + $1.count }
        var heap = Heap<(ms: Double, index: Int, m: Int)> { ($0.ms, $0.index) < ($1.ms, $1.index) }
        for (j, c) in classes.enumerated() { heap.push((finish(c, 2).ms, j, 2)) }
        while done < need, let next = heap.pop() {
            deadline = max(deadline, next.ms)
            done += classes[next.index].count
            heap.push((finish(classes[next.index], next.m + 1).ms, next.index, next.m + 1))
        }
        // Each class's shape: the one that runs the most microbatches by the deadline.
        let shapes = classes.map { c in
            var best = (m: 0, shape: 0)
            for (i, shape) in c.shapes.enumerated() {
                let m = shape.microbatches(within: deadline, cap: need)
                if m > best.m { best = (m, i) }
            }
            return best.shape
        }
        return (deadline, shapes)
    }

    /// Microbatches and samples per replica for classes that each use one shape, finishing by
    /// the least compute time: replicas listed class by class, in order.
    static func shares(_ shapes: [PipelineShape], counts: [Int], batch: Int, microbatch: Int) -> (microbatches: [Int], samples: [Int]) {
        let need = (batch + microbatch - 1) / microbatch
        let classes = zip(shapes, counts).map { PipelineClass(shapes: [$0], count: $1) }
        let deadline = minimalComputeMs(classes, need: need)!.ms
        var owner: [Int] = []
        var m: [Int] = []
        for (j, shape) in shapes.enumerated() {
            let each = max(1, shape.microbatches(within: deadline, cap: need))
            for _ in 0..<counts[j] {
                owner.append(j)
                m.append(each)
            }
        }
        let replicas = m.count
        let target = max(need, replicas)
        // Take back microbatches the batch does not need, always from the replica finishing last.
        var excess = m.reduce(0, +) - target
        if excess > 0 {
            var heap = Heap<(ms: Double, replica: Int)> { ($0.ms, -$0.replica) > ($1.ms, -$1.replica) }
            for r in 0..<replicas where m[r] > 1 { heap.push((shapes[owner[r]].ms(microbatches: m[r]), r)) }
            while excess > 0, let top = heap.pop() {
                m[top.replica] -= 1
                excess -= 1
                if m[top.replica] > 1 { heap.push((shapes[owner[top.replica]].ms(microbatches: m[top.replica]), top.replica)) }
            }
        }
        // Whole microbatches, then the surplus sequences off the replicas finishing last (each keeps
        // more than m - 1 microbatches' worth, so its microbatch count stands).
        var samples = m.map { $0 * microbatch }
        var surplus = samples.reduce(0, +) - batch
        let order = (0..<replicas).sorted {
            let (x, y) = (shapes[owner[$0]].ms(microbatches: m[$0]), shapes[owner[$1]].ms(microbatches: m[$1]))
            return x != y ? x > y : $0 < $1
        }
        for r in order where surplus > 0 {
            let take = min(surplus, microbatch - 1)
            samples[r] -= take
            surplus -= take
        }
        precondition(surplus == 0, "share allocation left \(surplus) sequences over")
        return (m, samples)
    }
}

/// A binary heap ordered by `above` (the element that should come out first is "above").
struct Heap<Element> {
    private var items: [Element] = []
    private let above: (Element, Element) -> Bool

    init(above: @escaping (Element, Element) -> Bool) { self.above = above }

    mutating func push(_ item: Element) {
        items.append(item)
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard above(items[i], items[parent]) else { break }
            items.swapAt(i, parent)
            i = parent
        }
    }

    mutating func pop() -> Element? {
        guard !items.isEmpty else { return nil }
        items.swapAt(0, items.count - 1)
        let top = items.removeLast()
        var i = 0
        while true {
            let (l, r) = (2 * i + 1, 2 * i + 2)
            var best = i
            if l < items.count && above(items[l], items[best]) { best = l }
            if r < items.count && above(items[r], items[best]) { best = r }
            if best == i { break }
            items.swapAt(i, best)
            i = best
        }
        return top
    }
}
