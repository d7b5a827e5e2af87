import MedleyControl
import Testing

@Suite("control messages")
struct ControlMessagesTests {
    @Test("wire numbers of the enums are fixed (they go into protobuf fields)")
    func wireNumbers() {
        #expect(ControlHealth.allCases.map(\.rawValue) == [1, 2, 3, 4])
        #expect(ControlFaultKind.allCases.map(\.rawValue) == [1, 2, 3, 4, 5, 6])
        #expect(ControlCommandKind.allCases.map(\.rawValue) == [1, 2])
    }
}
