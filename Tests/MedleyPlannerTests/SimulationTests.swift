import MedleyCore
import MedleyPlanner
import Testing

@Suite struct SimulationTests {
    @Test func parsesDeviceLists() throws {
        let entries = try Simulation.parse(devices: "4096xA, 4096xB,1808xC", known: ["A", "B", "C", "D"])
        #expect(entries.map(\.count) == [4096, 4096, 1808])
        #expect(entries.map(\.chip) == ["A", "B", "C"])
        let keyed = try Simulation.parse(devices: "2xcpu,8xsim{kernels=cpu,speed=0.5}", known: ["cpu", "sim{kernels=cpu,speed=0.5}"])
        #expect(keyed.map(\.chip) == ["cpu", "sim{kernels=cpu,speed=0.5}"])
        #expect(keyed.map(\.count) == [2, 8])
        let simulation = try Simulation(devices: "3xD,1xA", shape: .init(layers: 4))
        #expect(simulation.inventory.devices == [0, 0, 0, 1])
        #expect(simulation.inventory.profiles.map(\.chip) == ["D", "A"])
        #expect(simulation.globalBatch == 32)
        #expect(simulation.devicesText == "3xD,1xA")
    }

    @Test("bad device lists are rejected with one line", arguments: [
        ("4096xZ", "unknown chip type 'Z' in '4096xZ' (known: A, B, C, D)"),
        ("0xA", "'0xA': the count must be a whole number of at least 1"),
        ("-3xA", "'-3xA': the count must be a whole number of at least 1"),
        ("x", "'x' is not COUNTxCHIP"),
        ("A", "'A' is not COUNTxCHIP"),
        ("4x", "'4x' names no chip type"),
        ("", "no devices"),
        ("4xA,,4xB", "'' is not COUNTxCHIP"),
        ("4xA,2xA", "chip type 'A' is listed twice"),
        ("99999999999999999999xA", "the count must be a whole number"),
    ])
    func badDevices(_ text: String, _ expected: String) {
        let error = #expect(throws: MedleyError.self) { try Simulation(devices: text) }
        #expect(error?.message.hasPrefix("--devices: ") == true)
        #expect(error?.message.contains(expected) == true, "\(error?.message ?? "")")
    }

    @Test("the built-in chip types differ in speed and memory, and their profiles are valid")
    func catalog() throws {
        #expect(SyntheticChip.catalog.map(\.key) == ["A", "B", "C", "D"])
        let profiles = SyntheticChip.catalog.map { $0.profile(layers: 96, dim: 2048, heads: 16, seq: 1024, vocab: 50304) }
        _ = try StepTimeModel(
            model: ModelCost.gpt(layers: 96, dim: 2048, heads: 16, seq: 1024, vocab: 50304),
            inventory: DeviceInventory(profiles: profiles, devices: [0, 1, 2, 3]), network: SyntheticChip.network)
        #expect(Set(profiles.map(\.memoryBytes)).count == 4)
        let block = profiles.map { $0.timings.first { $0.kind == .block && $0.microbatch == 1 }!.forwardMs }
        #expect(block[0] < block[3] && block[3] < block[1] && block[1] < block[2])
    }
}
