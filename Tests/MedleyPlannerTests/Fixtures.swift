import MedleyCore
import MedleyPlanner

/// Small models, chip types and networks for the planner's tests.
enum Fixture {
    /// A tiny GPT: `blocks` blocks of 64 channels, 32 positions, 256 tokens
    /// (a block: ~0.8 MB of parameters at 16 bytes each, ~0.3 MB of activations per sequence).
    static func model(blocks: Int) -> ModelCost {
        ModelCost.gpt(layers: blocks, dim: 64, heads: 4, seq: 32, vocab: 256)
    }

    /// A chip type whose block takes `blockMs` per sequence forward (backward twice), the
    /// embedding a tenth and the head half of that, each with `fixedMs` per call, timed at
    /// microbatches 1 and 4.
    static func chip(
        _ key: String, blockMs: Double, memory: Int, fixedMs: Double = 0.05, embeddingShare: Double = 0.1,
        headShare: Double = 0.5, optimizerMsPerByte: Double = 1e-7
    ) -> DeviceProfile {
        var timings: [DeviceProfile.LayerTiming] = []
        for (kind, share) in [(ModelCost.Layer.Kind.embedding, embeddingShare), (.block, 1), (.head, headShare)] {
            for b in [1, 4] {
                let perSequence = blockMs * share * Double(b)
                timings.append(.init(kind: kind, microbatch: b, forwardMs: fixedMs + perSequence, backwardMs: fixedMs + 2 * perSequence))
            }
        }
        return DeviceProfile(
            chip: key, adapter: "test", vendor: "Test", name: key, memoryBytes: memory, timings: timings,
            optimizerMsPerParameterByte: optimizerMsPerByte)
    }

    /// 1 GB/s links with 20 µs latency: slow enough that exchange and sends matter for the tiny model.
    static let network = NetworkModel(latencySeconds: 2e-5, bytesPerSecond: 1e9)

    static let mib = 1 << 20

    /// An inventory with `counts[i]` devices of `profiles[i]`, in profile order.
    static func inventory(_ profiles: [DeviceProfile], _ counts: [Int]) -> DeviceInventory {
        DeviceInventory(profiles: profiles, devices: counts.enumerated().flatMap { [Int](repeating: $0, count: $1) })
    }
}

/// Exhaustive search over the planner's plan space, written plainly: every microbatch size the
/// planner tries; every multiset of pipelines (chip types in grouped order) within the device counts
/// with at most one replica per sequence; every split of every pipeline kind (replicas of one kind
/// share it); and for each, the least compute time over all whole-microbatch shares, found by
/// scanning every candidate finishing time. Prices come from ``StepTimeModel``'s per-stage functions.
struct BruteForce {
    let planner: Planner

    /// The least predicted step (ms) of any plan in the plan space; nil if none fits.
    func bestStepMs() throws -> Double? {
        let cost = try StepTimeModel(model: planner.model, inventory: planner.inventory, network: planner.network)
        let n = planner.model.layers.count
        let maxStages = min(planner.options.maxStages ?? n, n)
        var countsByType = [Int](repeating: 0, count: planner.inventory.profiles.count)
        for t in planner.inventory.devices { countsByType[t] += 1 }
        let types = countsByType.indices.filter { countsByType[$0] > 0 }

        // Every sequence of chip types with each type's stages adjacent.
        var words: [[Int]] = []
        func extend(_ word: [Int]) {
            if !word.isEmpty { words.append(word) }
            guard word.count < maxStages else { return }
            for t in types where word.filter({ $0 == t }).count < countsByType[t] {
                // Grouped: a type may only continue its own run or start a new one.
                if word.contains(t) && word.last != t { continue }
                extend(word + [t])
            }
        }
        extend([])

        // Every split of n layers into p non-empty contiguous ranges, as end indices.
        func splits(_ p: Int) -> [[Int]] {
            if p == 1 { return [[n]] }
            var out: [[Int]] = []
            func go(_ start: Int, _ left: Int, _ ends: [Int]) {
                if left == 1 {
                    out.append(ends + [n])
                    return
                }
                for e in (start + 1)...(n - left + 1) { go(e, left - 1, ends + [e]) }
            }
            go(0, p, [])
            return out
        }

        // The model's per-stage prices, remembered (each call of StepTimeModel's functions rebuilds its tables).
        struct Key: Hashable { var t: Int, a: Int, e: Int, x: Int, y: Int }
        var stageMemo: [Key: (ms: Double, memory: Int)] = [:]
        var updateMemo: [Key: Double] = [:]
        func stage(_ t: Int, _ layers: Range<Int>, inFlight: Int, b: Int) -> (ms: Double, memory: Int) {
            let key = Key(t: t, a: layers.lowerBound, e: layers.upperBound, x: inFlight, y: b)
            if let known = stageMemo[key] { return known }
            let times = cost.stageTimes(profile: t, layers: layers, microbatch: b)
            let value = (times.forwardMs + times.backwardMs, cost.stageMemoryBytes(layers: layers, inFlight: inFlight, microbatch: b))
            stageMemo[key] = value
            return value
        }
        func updateMs(_ t: Int, _ layers: Range<Int>, holders: StepTimeModel.Holders) -> Double {
            let key = Key(t: t, a: layers.lowerBound, e: layers.upperBound, x: holders.replicas, y: holders.table)
            if let known = updateMemo[key] { return known }
            let value = cost.exchangeMs(layers: layers, holders: holders) + cost.optimizerMs(profile: t, layers: layers, holders: holders)
            updateMemo[key] = value
            return value
        }

        func price(_ pipelines: [([Int], [Int])], b: Int, need: Int) -> Double? {
            let holders = StepTimeModel.Holders(stageCounts: pipelines.map(\.0.count))
            var shapes: [(sum: Double, largest: Double)] = []
            var update = 0.0
            for (word, ends) in pipelines {
                var sum = 0.0, largest = 0.0, start = 0
                for (s, t) in word.enumerated() {
                    let layers = start..<ends[s]
                    let (ms, memory) = stage(t, layers, inFlight: word.count - s, b: b)
                    guard memory <= planner.inventory.profiles[t].memoryBytes else { return nil }
                    sum += ms
                    largest = max(largest, ms)
                    update = max(update, updateMs(t, layers, holders: holders))
                    start = ends[s]
                }
                shapes.append((sum, largest))
            }
            // Least deadline by which every replica runs at least one microbatch and all run `need`.
            let floor = shapes.map(\.sum).max()!
            let times = shapes.flatMap { shape in (1...need).map { shape.sum + Double($0 - 1) * shape.largest } }
            for deadline in times.filter({ $0 >= floor }).sorted() {
                let done = shapes.reduce(0) { total, shape in
                    total + (1...need).filter { shape.sum + Double($0 - 1) * shape.largest <= deadline }.count
                }
                if done >= need { return deadline + update }
            }
            return nil
        }
        var best: Double?
        for b in planner.microbatchCandidates {
            let need = (planner.globalBatch + b - 1) / b
            var remaining = countsByType
            var chosen: [Int] = []
            func evaluate() {
                let kinds = Array(Set(chosen)).sorted()
                var splitChoice = [Int: [Int]]()
                func assign(_ k: Int) {
                    if k == kinds.count {
                        if let step = price(chosen.map { (words[$0], splitChoice[$0]!) }, b: b, need: need) {
                            best = min(best ?? .infinity, step)
                        }
                        return
                    }
                    for split in splits(words[kinds[k]].count) {
                        splitChoice[kinds[k]] = split
                        assign(k + 1)
                    }
                }
                assign(0)
            }
            func visit(_ from: Int) {
                for w in from..<words.count where chosen.count < planner.globalBatch {
                    let use = types.map { t in words[w].filter { $0 == t }.count }
                    guard zip(types, use).allSatisfy({ remaining[$0] >= $1 }) else { continue }
                    for (t, k) in zip(types, use) { remaining[t] -= k }
                    chosen.append(w)
                    evaluate()
                    visit(w)
                    chosen.removeLast()
                    for (t, k) in zip(types, use) { remaining[t] += k }
                }
            }
            visit(0)
        }

        return best
    }
}
