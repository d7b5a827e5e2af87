import MedleyCore

/// A tensor in host memory: what the conformance kit feeds to and reads from devices.
public struct HostTensor: Sendable, Equatable {
    /// Element type (float tensors are held as `Float` whatever their device dtype).
    public var dtype: DType
    /// Dimensions, outermost first.
    public var shape: [Int]
    /// Values of a float tensor.
    public var floats: [Float]
    /// Values of an `i32` tensor.
    public var ints: [Int32]

    /// A float tensor.
    public init(_ shape: [Int], floats: [Float]) {
        precondition(floats.count == shape.reduce(1, *), "\(floats.count) values for shape \(shape)")
        self.dtype = .f32
        self.shape = shape
        self.floats = floats
        self.ints = []
    }

    /// An `i32` tensor.
    public init(_ shape: [Int], ints: [Int32]) {
        precondition(ints.count == shape.reduce(1, *), "\(ints.count) values for shape \(shape)")
        self.dtype = .i32
        self.shape = shape
        self.floats = []
        self.ints = ints
    }

    /// Number of elements.
    public var count: Int { shape.reduce(1, *) }
    /// Bytes on the device.
    public var byteCount: Int { count * dtype.size }
}
