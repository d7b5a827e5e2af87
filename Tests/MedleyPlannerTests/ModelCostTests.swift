import MedleyPlanner
import Testing

@Suite struct ModelCostTests {
    @Test func networkPricesLatencyPlusBytes() {
        let link = NetworkModel(latencySeconds: 1e-5, bytesPerSecond: 1e9)
        #expect(abs(link.sendSeconds(bytes: 1_000_000) - 0.00101) < 1e-12)
    }
}
