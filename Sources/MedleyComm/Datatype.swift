import CMPI

/// An MPI datatype handle, as Swift code passes it around without seeing C types.
public struct Datatype: @unchecked Sendable {
    // MPI_Datatype is a pointer to a predefined Open MPI object that lives for the whole
    // process and is never mutated by Medley: sharing it across threads is safe.
    let handle: MPI_Datatype
}

/// A Swift element type that maps onto an MPI datatype, so buffers of it can be communicated.
public protocol CommunicableElement: BitwiseCopyable, Sendable {
    /// The MPI datatype whose layout matches this Swift type.
    static var datatype: Datatype { get }
}

extension Float: CommunicableElement {
    /// `MPI_FLOAT`.
    public static var datatype: Datatype { Datatype(handle: CMPI_float()) }
}
extension Double: CommunicableElement {
    /// `MPI_DOUBLE`.
    public static var datatype: Datatype { Datatype(handle: CMPI_double()) }
}
extension Int8: CommunicableElement {
    /// `MPI_INT8_T`.
    public static var datatype: Datatype { Datatype(handle: CMPI_int8()) }
}
extension UInt8: CommunicableElement {
    /// `MPI_UINT8_T`.
    public static var datatype: Datatype { Datatype(handle: CMPI_uint8()) }
}
extension Int32: CommunicableElement {
    /// `MPI_INT32_T`.
    public static var datatype: Datatype { Datatype(handle: CMPI_int32()) }
}
extension UInt32: CommunicableElement {
    /// `MPI_UINT32_T`.
    public static var datatype: Datatype { Datatype(handle: CMPI_uint32()) }
}
extension Int64: CommunicableElement {
    /// `MPI_INT64_T`.
    public static var datatype: Datatype { Datatype(handle: CMPI_int64()) }
}
extension UInt64: CommunicableElement {
    /// `MPI_UINT64_T`.
    public static var datatype: Datatype { Datatype(handle: CMPI_uint64()) }
}

/// A reduction that `allreduce` applies element by element across ranks.
public enum ReductionOp: Sendable, CustomStringConvertible {
    /// Sum (`MPI_SUM`).
    case sum
    /// Minimum (`MPI_MIN`).
    case min
    /// Maximum (`MPI_MAX`).
    case max
    /// Bitwise and (`MPI_BAND`); integer types only.
    case bitwiseAnd

    var handle: MPI_Op {
        switch self {
        case .sum: CMPI_sum()
        case .min: CMPI_min()
        case .max: CMPI_max()
        case .bitwiseAnd: CMPI_band()
        }
    }

    /// The MPI name of the operation.
    public var description: String {
        switch self {
        case .sum: "MPI_SUM"
        case .min: "MPI_MIN"
        case .max: "MPI_MAX"
        case .bitwiseAnd: "MPI_BAND"
        }
    }
}
