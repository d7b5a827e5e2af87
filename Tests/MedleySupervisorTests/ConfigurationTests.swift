import MedleyCore
import MedleySupervisor
import Testing

@Suite("supervisor configuration")
struct ConfigurationTests {
    @Test("the defaults are valid; each setting out of range is one line naming it")
    func validation() throws {
        try SupervisorConfiguration(ranks: 3).validate()
        let bad: [(SupervisorConfiguration, String)] = [
            (SupervisorConfiguration(ranks: 0), "supervise.ranks"),
            (SupervisorConfiguration(ranks: 2, heartbeatTimeout: 0), "supervise.heartbeat_timeout"),
            (SupervisorConfiguration(ranks: 2, heartbeatTimeout: .nan), "supervise.heartbeat_timeout"),
            (SupervisorConfiguration(ranks: 2, stragglerFactor: 1), "supervise.straggler_factor"),
            (SupervisorConfiguration(ranks: 2, stragglerSteps: 0), "supervise.straggler_steps"),
            (SupervisorConfiguration(ranks: 2, helloTimeout: -1), "supervise.hello_timeout"),
        ]
        for (configuration, field) in bad {
            #expect(throws: MedleyError.self) { try configuration.validate() }
            do { try configuration.validate() } catch let error as MedleyError { #expect(error.message.hasPrefix(field)) }
        }
    }
}
