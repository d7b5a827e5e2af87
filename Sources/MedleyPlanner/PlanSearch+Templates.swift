extension PlanSearch {
    /// The search for many chips, at microbatch size `costs.microbatch`: its work grows with
    /// chip types and layers, not with devices.
    ///
    /// 1. For each chip type and pipeline depth p, the balanced split of a pipeline of p chips of
    ///    that type (least slowest stage, then least sum), all depths from one dynamic program.
    /// 2. A template per type is a depth p: ⌊n/p⌋ replicas of it, optionally one more pipeline
    ///    of the n mod p devices left over, or none at all (the type is left out). Coordinate
    ///    descent over the types' templates, each candidate priced exactly (share allocation,
    ///    exchange among the resulting holders), until no type's change helps; started once with
    ///    every type left out, and once from the best joint move of all types under a cap on the
    ///    parameters of any stage (the slowest rank's exchange grows with them, and no single
    ///    type's change can lower it).
    /// 3. Mixed templates for modest inventories: R replicas (R ≤ 16, fewer than step 2 found) of
    ///    one pipeline holding ⌊n/R⌋ chips of every type, in every order of the types (for pipelines
    ///    of at most 16 chips and 4 types; else memory-descending and ascending).
    /// 4. A type whose chips cannot hold the model in any pipeline of their own (at this and every
    ///    smaller microbatch size) joins pipelines of another type: c of its chips appended to (or
    ///    put in front of) a host type's template.
    /// 5. The best candidate so far is re-split under caps on every stage's update
    ///    (``refineUpdate(_:costs:)``), so that end stages holding the token table give up blocks
    ///    when that shortens the step.
    mutating func searchTemplates(costs: StageCosts) {
        // Balanced splits of homogeneous pipelines: splits[i][p] for type position i, depth p.
        let splits: [[SplitPoint?]] = types.indices.map { i in
            SplitSearch.homogeneous(type: types[i], costs: costs, deepest: min(counts[i], maxStages))
        }
        struct Option: Equatable { var depth = 0, replicas = 0, leftover = 0 }
        let options: [[Option]] = types.indices.map { i in
            var list = [Option()]
            for p in splits[i].indices where splits[i][p] != nil {
                list.append(Option(depth: p, replicas: counts[i] / p))
                let rest = counts[i] % p
                if rest > 0 && splits[i][rest] != nil { list.append(Option(depth: p, replicas: counts[i] / p, leftover: rest)) }
            }
            return list
        }
        func kinds(_ choice: [Int]) -> [Candidate.PipelineKind] {
            var kinds: [Candidate.PipelineKind] = []
            for (i, o) in choice.enumerated() {
                let option = options[i][o]
                guard option.depth > 0 else { continue }
                let word = [Int](repeating: types[i], count: option.depth)
                kinds.append(.init(word: word, split: splits[i][option.depth]!, count: option.replicas))
                if option.leftover > 0 {
                    let rest = [Int](repeating: types[i], count: option.leftover)
                    kinds.append(.init(word: rest, split: splits[i][option.leftover]!, count: 1))
                }
            }
            return kinds
        }
        func price(_ kinds: [Candidate.PipelineKind]) -> Candidate? { priceKinds(kinds, costs: costs) }

        // Coordinate descent over the types' templates from `start`: one type's template changes at a time.
        func descend(from start: [Int]) -> (choice: [Int], candidate: Candidate?) {
            var choice = start
            var current = price(kinds(start))
            for _ in 0..<8 {
                var improved = false
                for i in types.indices {
                    for o in options[i].indices where o != choice[i] {
                        var trial = choice
                        trial[i] = o
                        guard let candidate = price(kinds(trial)) else { continue }
                        consider(candidate)
                        if candidate.beats(current) {
                            current = candidate
                            choice = trial
                            improved = true
                        }
                    }
                }
                if !improved { break }
            }
            return (choice, current)
        }
        // Start 1: every type left out.
        var (choice, current) = descend(from: [Int](repeating: 0, count: types.count))
        // Start 2: every type at once within a cap on the parameters its fullest stage holds (what the
        // slowest rank's exchange grows with, which one type alone cannot lower): for each cap, each
        // type's shallowest template within it; the best of those starts a second descent.
        let fullest: [[Int]] = types.indices.map { i in
            options[i].map { option in
                guard option.depth > 0, let split = splits[i][option.depth] else { return 0 }
                var start = 0, most = 0
                for end in split.ends {
                    most = max(most, costs.storedParameters(start, end))
                    start = end
                }
                return most
            }
        }
        var bestStart: (choice: [Int], candidate: Candidate)?
        for cap in Array(Set(fullest.flatMap { $0 })).sorted() where cap > 0 {
            let start = types.indices.map { i in
                options[i].indices.filter { options[i][$0].depth > 0 && options[i][$0].leftover == 0 && fullest[i][$0] <= cap }
                    .min { options[i][$0].depth < options[i][$1].depth } ?? 0
            }
            guard let candidate = price(kinds(start)) else { continue }
            consider(candidate)
            if candidate.beats(bestStart?.candidate) { bestStart = (start, candidate) }
        }
        if let bestStart, bestStart.choice != choice {
            let second = descend(from: bestStart.choice)
            if let candidate = second.candidate, candidate.beats(current) { (choice, current) = (second.choice, candidate) }
        }

        // Together a pipeline's stages must at least hold the parameters and one microbatch of activations.
        let leastTotal = costs.storedParameters(0, costs.layerCount) * model.model.bytesPerParameter
            + costs.microbatch * (model.activationPrefix[costs.layerCount])

        // Mixed templates: R replicas of one pipeline holding ⌊n/R⌋ chips of every type. Fewer, deeper
        // replicas than one template per type, so a smaller exchange; worth it while R is small.
        var tried: [[Int]] = []
        for replicas in stride(from: min(batch, counts.max()!, Self.mixedReplicasLimit), through: 1, by: -1) {
            let share = counts.map { $0 / replicas }
            let present = types.indices.filter { share[$0] > 0 }
            let length = share.reduce(0, +)
            guard present.count >= 2, length <= maxStages, !tried.contains(share) else { continue }
            // Its point is fewer replicas than the templates per type found.
            if let current, replicas >= current.replicas { continue }
            tried.append(share)
            let room = types.indices.reduce(0) { $0 + share[$1] * model.inventory.profiles[types[$1]].memoryBytes }
            guard room >= leastTotal else { continue }
            let memory = present.map { model.inventory.profiles[types[$0]].memoryBytes }
            for order in Self.orders(present, memory: memory, all: length <= Self.mixedOrdersLength) {
                let word = order.flatMap { [Int](repeating: types[$0], count: share[$0]) }
                guard let split = SplitSearch.balanced(word: word, costs: costs),
                      let candidate = price([.init(word: word, split: split, count: replicas)]) else { continue }
                consider(candidate)
                if candidate.beats(current) { current = candidate }
            }
        }

        // The best so far with its pipelines' end stages relieved of blocks where that shortens the update.
        if let found = current { current = refineUpdate(found, costs: costs) }

        // Types that cannot form pipelines of their own ride along in another type's pipelines.
        // A type that formed pipelines of its own at a smaller microbatch is better served there.
        let starved = types.indices.filter { options[$0].count == 1 && !formsPipelines[$0] }
        for i in types.indices where options[i].count > 1 { formsPipelines[i] = true }
        for i in starved {
            var best = current
            let hosts: [(host: [Int], count: Int, at: Int?)] = current.map { plan in
                plan.kinds.enumerated().map { ($1.word, $1.count, $0) }
            } ?? []
            // Without any pipeline to join, try short pipelines of every other type with these chips.
            var trials: [(host: [Int], count: Int, at: Int?)] = hosts
            if hosts.isEmpty {
                for h in types.indices where h != i {
                    for a in stride(from: 1, through: min(counts[h], maxStages - 1, 16), by: 1) {
                        trials.append(([Int](repeating: types[h], count: a), counts[h] / a, nil))
                    }
                }
            }
            for trial in trials where trial.host.count < maxStages {
                for c in 1...min(counts[i], maxStages - trial.host.count, 8) {
                    let guests = [Int](repeating: types[i], count: c)
                    let room = trial.host.reduce(0) { $0 + model.inventory.profiles[$1].memoryBytes }
                        + c * model.inventory.profiles[types[i]].memoryBytes
                    guard room >= leastTotal else { continue }
                    for word in [trial.host + guests, guests + trial.host] {
                        guard let split = SplitSearch.balanced(word: word, costs: costs) else { continue }
                        let mixed = min(trial.count, counts[i] / c)
                        guard mixed > 0 else { continue }
                        var kinds = current?.kinds ?? []
                        if let at = trial.at {
                            kinds[at].count -= mixed
                            if kinds[at].count == 0 { kinds.remove(at: at) }
                        }
                        kinds.append(.init(word: word, split: split, count: mixed))
                        guard let candidate = price(kinds) else { continue }
                        consider(candidate)
                        if candidate.beats(best) { best = candidate }
                    }
                }
            }
            current = best
        }
    }

    /// `candidate` with its pipelines re-split under a cap on every stage's update (exchange +
    /// optimizer), for each cap below its slowest update that some stage could have, highest first,
    /// until no split fits under the cap: the balanced splits ignore the update, so a pipeline's end
    /// stages, which also exchange the token table, may hold as many blocks as the middle ones and
    /// set the step's update. The best of these (or the candidate itself) is returned.
    ///
    /// Capped splits are never faster than balanced ones, so a cap that cannot beat the best step
    /// even with the uncapped compute time is skipped.
    mutating func refineUpdate(_ candidate: Candidate, costs: StageCosts) -> Candidate {
        let kinds = candidate.kinds
        guard kinds.contains(where: { $0.word.count > 1 }) else { return candidate }
        let holders = StepTimeModel.Holders(
            replicas: candidate.replicas, table: kinds.reduce(0) { $0 + $1.count * ($1.word.count == 1 ? 1 : 2) })
        let update = kinds.map(\.split.update).max() ?? 0
        let compute = candidate.stepMs - update
        // The updates a stage of these pipelines could have: its type, and its range's position and length.
        let n = costs.layerCount
        var caps = Set<Double>()
        var longest = 0
        for kind in kinds {
            var start = 0
            for end in kind.split.ends {
                longest = max(longest, end - start)
                start = end
            }
        }
        for t in Set(kinds.flatMap(\.word)) {
            for length in 1...max(1, longest) where length < n {
                caps.insert(costs.updateMs(t, 0, length, holders))
                caps.insert(costs.updateMs(t, n - length, n, holders))
                if length + 1 < n { caps.insert(costs.updateMs(t, 1, 1 + length, holders)) }
            }
        }
        var best = candidate
        for cap in caps.filter({ $0 < update * (1 - 1e-12) }).sorted(by: >) {
            if compute + cap >= best.stepMs { continue }
            var resplit: [Candidate.PipelineKind] = []
            for kind in kinds {
                guard kind.word.count > 1 else {
                    resplit.append(kind)
                    continue
                }
                guard let split = SplitSearch.balanced(word: kind.word, costs: costs, updateCap: cap, holders: holders) else { break }
                resplit.append(.init(word: kind.word, split: split, count: kind.count))
            }
            // No split fits under this cap, nor under any lower one.
            guard resplit.count == kinds.count else { break }
            guard let priced = priceKinds(resplit, costs: costs) else { continue }
            consider(priced)
            if priced.beats(best) { best = priced }
        }
        return best
    }

    /// `kinds` priced exactly at microbatch size `costs.microbatch`: each kind's slowest update for
    /// the holder counts the kinds give, the least compute time over the share allocation, and
    /// their sum; nil when there are no replicas, more replicas than sequences, or no allocation.
    func priceKinds(_ kinds: [Candidate.PipelineKind], costs: StageCosts) -> Candidate? {
        let b = costs.microbatch
        let replicas = kinds.reduce(0) { $0 + $1.count }
        guard replicas >= 1 && replicas <= batch else { return nil }
        var priced = kinds
        var update = 0.0
        let holders = StepTimeModel.Holders(
            replicas: replicas, table: kinds.reduce(0) { $0 + $1.count * ($1.word.count == 1 ? 1 : 2) })
        for j in priced.indices {
            priced[j].split.update = SplitSearch.update(
                word: priced[j].word, ends: priced[j].split.ends, costs: costs, holders: holders)
            update = max(update, priced[j].split.update)
        }
        let classes = priced.map { PipelineClass(shapes: [$0.split.shape], count: $0.count) }
        guard let compute = MicrobatchAllocation.minimalComputeMs(classes, need: (batch + b - 1) / b) else { return nil }
        return Candidate(microbatch: b, stepMs: compute.ms + update, kinds: priced)
    }

    /// Most replicas of a mixed template (deeper pipelines need more chips than a modest inventory has).
    static let mixedReplicasLimit = 16

    /// Longest mixed pipeline whose type orders are all tried (longer: memory-descending and ascending only).
    static let mixedOrdersLength = 16

    /// Orders of the types `items` to try in a mixed pipeline: all of them when `all` and at most 4
    /// types, else by memory descending and ascending.
    static func orders(_ items: [Int], memory: [Int], all: Bool) -> [[Int]] {
        guard !all || items.count > 4 else { return permutations(items) }
        let descending = items.indices.sorted { memory[$0] != memory[$1] ? memory[$0] > memory[$1] : $0 < $1 }.map { items[$0] }
        return [descending, descending.reversed()]
    }
}

