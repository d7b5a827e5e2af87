import MedleyCore

extension StepTimeModel {
    /// Throws `invalidArgument` with one line naming the first thing wrong with `model`.
    static func validate(model: ModelCost) throws {
        func fail(_ message: String) -> MedleyError { MedleyError(.invalidArgument, "model cost: " + message) }
        let layers = model.layers
        guard layers.count >= 2 else {
            throw fail("needs at least an embedding and a head, got \(layers.count) planning layer(s)")
        }
        for (i, layer) in layers.enumerated() {
            let expected: ModelCost.Layer.Kind = i == 0 ? .embedding : i == layers.count - 1 ? .head : .block
            guard layer.kind == expected else {
                throw fail("planning layer \(i) is a \(layer.kind.rawValue), expected a \(expected.rawValue) (embedding, blocks, head)")
            }
            guard layer.parameters >= 0, layer.activationBytesPerSequence >= 0, layer.outputBytesPerSequence >= 0 else {
                throw fail("planning layer \(i) has a negative size (parameters, activation or output bytes)")
            }
            guard layer.tiedParameters >= 0 && layer.tiedParameters <= layer.parameters else {
                throw fail("planning layer \(i) ties \(layer.tiedParameters) of its \(layer.parameters) parameters")
            }
            guard layer.tiedParameters == 0 || layer.kind == .head else {
                throw fail("planning layer \(i) is a \(layer.kind.rawValue); only the head may tie parameters to the embedding")
            }
        }
        guard layers.last!.tiedParameters <= layers[0].parameters else {
            throw fail("the head ties \(layers.last!.tiedParameters) parameters, more than the embedding's \(layers[0].parameters)")
        }
        guard model.seq >= 1 else { throw fail("seq must be at least 1, got \(model.seq)") }
        guard model.bytesPerParameter >= 1 else {
            throw fail("bytesPerParameter must be at least 1, got \(model.bytesPerParameter)")
        }
    }

    /// Throws `invalidArgument` with one line naming the first thing wrong with `inventory`.
    static func validate(inventory: DeviceInventory) throws {
        guard !inventory.devices.isEmpty else {
            throw MedleyError(.invalidArgument, "no chips: the inventory lists no devices")
        }
        let profiles = inventory.profiles
        for (i, index) in inventory.devices.enumerated() where index < 0 || index >= profiles.count {
            throw MedleyError(
                .invalidArgument,
                "device \(i) names chip type \(index), but there \(profiles.count == 1 ? "is 1 chip type" : "are \(profiles.count) chip types")"
                    + (profiles.isEmpty ? "" : " (0...\(profiles.count - 1))"))
        }
        for (i, profile) in profiles.enumerated() {
            let name = "chip type \(i) ('\(profile.chip)')"
            func fail(_ message: String) -> MedleyError { MedleyError(.invalidArgument, "\(name): " + message) }
            guard !profile.chip.isEmpty else { throw MedleyError(.invalidArgument, "chip type \(i) has an empty key") }
            if let other = profiles[..<i].firstIndex(where: { $0.chip == profile.chip }) {
                throw MedleyError(.invalidArgument, "chip types \(other) and \(i) are both '\(profile.chip)'; keys must differ")
            }
            guard profile.memoryBytes > 0 else { throw fail("memory must be positive, got \(profile.memoryBytes) bytes") }
            guard profile.optimizerMsPerParameterByte.isFinite && profile.optimizerMsPerParameterByte >= 0 else {
                throw fail("optimizer time per parameter byte must be a finite number >= 0, got \(profile.optimizerMsPerParameterByte)")
            }
            for kind in ModelCost.Layer.Kind.allCases {
                let timings = profile.timings.filter { $0.kind == kind }
                guard !timings.isEmpty else { throw fail("has no timing for the \(kind.rawValue)") }
                var seen: [Int] = []
                for timing in timings {
                    guard timing.microbatch >= 1 else {
                        throw fail("\(kind.rawValue) timing at microbatch \(timing.microbatch); microbatches start at 1")
                    }
                    guard !seen.contains(timing.microbatch) else {
                        throw fail("times the \(kind.rawValue) twice at microbatch \(timing.microbatch)")
                    }
                    seen.append(timing.microbatch)
                    for (direction, ms) in [("forward", timing.forwardMs), ("backward", timing.backwardMs)] {
                        guard ms.isFinite && ms > 0 else {
                            throw fail(
                                "\(kind.rawValue) \(direction) time at microbatch \(timing.microbatch) must be a positive, finite number of ms, got \(ms)")
                        }
                    }
                }
            }
        }
    }

    /// Throws `invalidArgument` with one line when the network is not a usable α–β model.
    static func validate(network: NetworkModel) throws {
        guard network.latencySeconds.isFinite && network.latencySeconds >= 0 else {
            throw MedleyError(.invalidArgument, "network: latency must be a finite number of seconds >= 0, got \(network.latencySeconds)")
        }
        guard network.bytesPerSecond.isFinite && network.bytesPerSecond > 0 else {
            throw MedleyError(.invalidArgument, "network: bandwidth must be a positive, finite number of bytes per second, got \(network.bytesPerSecond)")
        }
    }
}
