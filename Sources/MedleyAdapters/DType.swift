import CMedleyAdapter

/// An element type of device tensors.
public enum DType: Int32, Sendable, CaseIterable, CustomStringConvertible {
    /// IEEE binary32; every op supports it.
    case f32 = 1
    /// bfloat16; optional.
    case bf16 = 2
    /// IEEE binary16; optional.
    case f16 = 3
    /// 32-bit signed integer, for token ids and targets.
    case i32 = 4

    /// Bytes per element.
    public var size: Int {
        switch self {
        case .f32, .i32: 4
        case .bf16, .f16: 2
        }
    }

    /// Whether this is a floating-point dtype.
    public var isFloat: Bool { self != .i32 }

    /// Short name: `f32`, `bf16`, `f16`, `i32`.
    public var description: String {
        switch self {
        case .f32: "f32"
        case .bf16: "bf16"
        case .f16: "f16"
        case .i32: "i32"
        }
    }

    /// Parses a short name as printed by `description`.
    public init?(name: String) {
        guard let match = DType.allCases.first(where: { $0.description == name.lowercased() }) else {
            return nil
        }
        self = match
    }

    /// Dtypes present in a device's dtype mask.
    static func set(fromMask mask: UInt32) -> [DType] {
        DType.allCases.filter { mask & (1 << UInt32($0.rawValue)) != 0 }
    }
}
