import MedleyAdapters
import MedleyCore
import MedleyTestSupport
import Testing

@Suite("Typed device API over the reference adapter")
struct DeviceTests {
    let device: Device

    init() throws {
        device = try AdapterLibrary.load("reference", searchPath: TestSupport.buildSearchPath).openDevice(0)
    }

    @Test("describe, allocate, round-trip and memset")
    func memory() throws {
        #expect(device.description.dtypes.contains(.f32))
        #expect(device.description.memoryBytes > 0)
        let values: [Float] = [1, -2, 3.5, 4]
        let buffer = try device.upload(values)
        #expect(try buffer.read(Float.self, count: 4) == values)
        try buffer.fill(byte: 0, offset: 4, bytes: 4)
        #expect(try buffer.read(Float.self, count: 4) == [1, 0, 3.5, 4])
        let copy = try device.allocate(bytes: 16)
        try copy.copy(from: buffer, bytes: 16)
        #expect(try copy.read(Float.self, count: 4) == [1, 0, 3.5, 4])
    }

    @Test("the memory option caps allocations with an out-of-memory error object")
    func memoryOption() throws {
        let small = try device.library.openDevice(0, options: [("memory", "1KiB")])
        #expect(small.description.memoryBytes == 1024)
        let held = try small.allocate(bytes: 1000)
        let error = #expect(throws: MedleyError.self) { _ = try small.allocate(bytes: 100) }
        withExtendedLifetime(held) {}
        #expect(error?.code == .outOfMemory)
        #expect(error?.adapterStatus == .outOfMemory)
    }

    @Test("a malformed option is an invalid-argument error naming the option")
    func badOption() throws {
        let error = #expect(throws: MedleyError.self) {
            _ = try device.library.openDevice(0, options: [("memory", "lots")])
        }
        #expect(error?.code == .invalidArgument)
        #expect(error?.message.contains("memory") == true)
    }

    @Test("matmul_forward through the typed API equals x·Wᵀ + b")
    func matmul() throws {
        let x: [Float] = [1, 2, 3, 4, 5, 6]  // [2,3]
        let w: [Float] = [1, 0, -1, 2, 1, 0.5]  // [2,3]
        let b: [Float] = [0.5, -1]
        let out = try device.allocate(bytes: 16)
        try device.launch(
            "matmul_forward",
            inputs: [try device.upload(x).tensor(.f32, [2, 3]), try device.upload(w).tensor(.f32, [2, 3]),
                     try device.upload(b).tensor(.f32, [2])],
            outputs: [out.tensor(.f32, [2, 2])])
        let expected: [Float] = [-1.5, 4.5, -1.5, 15]
        #expect(try out.read(Float.self, count: 4) == expected)
    }

    @Test("a closed device refuses further calls instead of crashing")
    func closed() throws {
        let other = try device.library.openDevice(0)
        let buffer = try other.allocate(bytes: 8)
        try other.close()
        #expect(throws: MedleyError.self) { try buffer.write([Float(1), 2]) }
        #expect(throws: MedleyError.self) { try other.synchronize() }
    }
}
