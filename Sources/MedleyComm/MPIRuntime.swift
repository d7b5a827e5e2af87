import CMPI
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import MedleyCore

/// How many threads of a process may call MPI, as MPI defines the levels.
public enum ThreadLevel: Int, Sendable, Comparable, CustomStringConvertible {
    /// Only one thread exists.
    case single
    /// Many threads exist, only the main thread calls MPI.
    case funneled
    /// Many threads call MPI, one at a time.
    case serialized
    /// Many threads call MPI at once.
    case multiple

    /// Orders levels from least to most permissive.
    public static func < (lhs: ThreadLevel, rhs: ThreadLevel) -> Bool { lhs.rawValue < rhs.rawValue }

    /// The MPI constant's name, e.g. `MPI_THREAD_FUNNELED`.
    public var description: String {
        switch self {
        case .single: "MPI_THREAD_SINGLE"
        case .funneled: "MPI_THREAD_FUNNELED"
        case .serialized: "MPI_THREAD_SERIALIZED"
        case .multiple: "MPI_THREAD_MULTIPLE"
        }
    }

    var mpiValue: Int32 {
        switch self {
        case .single: CMPI_thread_single()
        case .funneled: CMPI_thread_funneled()
        case .serialized: CMPI_thread_serialized()
        case .multiple: CMPI_thread_multiple()
        }
    }

    init(mpiValue: Int32) {
        switch mpiValue {
        case CMPI_thread_multiple(): self = .multiple
        case CMPI_thread_serialized(): self = .serialized
        case CMPI_thread_funneled(): self = .funneled
        default: self = .single
        }
    }
}

/// The process-wide MPI library: initialization, finalization, clock, abort.
public enum MPIRuntime {
    /// Initializes MPI (once per process) and returns the thread level the library provides.
    ///
    /// The error handler of `MPI_COMM_WORLD` and `MPI_COMM_SELF` is set to return codes,
    /// so every later failure becomes a thrown ``MedleyError`` instead of an abort.
    @discardableResult
    public static func initialize(requesting level: ThreadLevel = .funneled) throws -> ThreadLevel {
        if isInitialized { return try providedLevel() }
        var provided: Int32 = 0
        try mpiCheck(MPI_Init_thread(nil, nil, level.mpiValue, &provided), "MPI_Init_thread")
        try mpiCheck(MPI_Comm_set_errhandler(CMPI_comm_world(), CMPI_errors_return()), "MPI_Comm_set_errhandler(world)")
        try mpiCheck(MPI_Comm_set_errhandler(CMPI_comm_self(), CMPI_errors_return()), "MPI_Comm_set_errhandler(self)")
        return ThreadLevel(mpiValue: provided)
    }

    /// The thread level the initialized library provides.
    public static func providedLevel() throws -> ThreadLevel {
        var provided: Int32 = 0
        try mpiCheck(MPI_Query_thread(&provided), "MPI_Query_thread")
        return ThreadLevel(mpiValue: provided)
    }

    /// Whether `MPI_Init_thread` has run in this process.
    public static var isInitialized: Bool {
        var flag: Int32 = 0
        MPI_Initialized(&flag)
        return flag != 0
    }

    /// Whether `MPI_Finalize` has run in this process.
    public static var isFinalized: Bool {
        var flag: Int32 = 0
        MPI_Finalized(&flag)
        return flag != 0
    }

    /// Finalizes MPI; every rank must call it, after its last MPI call.
    public static func finalize() throws {
        guard isInitialized, !isFinalized else { return }
        try mpiCheck(MPI_Finalize(), "MPI_Finalize")
    }

    /// Ends every rank of the job at once (`MPI_Abort` on the world): the way out when only
    /// this rank failed and the others would otherwise wait for it forever.
    public static func abort(exitCode: Int32) -> Never {
        MPI_Abort(CMPI_comm_world(), exitCode)
        fatalError("MPI_Abort returned")
    }

    /// Seconds on MPI's wall clock (`MPI_Wtime`).
    public static func wallTime() -> Double { MPI_Wtime() }

    /// Whether this process was started by Open MPI's `mpirun` (its environment says so).
    public static var isUnderLauncher: Bool {
        getenvString("OMPI_COMM_WORLD_SIZE") != nil || getenvString("PMIX_RANK") != nil
    }
}

func getenvString(_ name: String) -> String? {
    guard let value = getenv(name) else { return nil }
    return String(cString: value)
}

/// Turns an MPI return code into a thrown `MedleyError(.communication)` carrying
/// `MPI_Error_string`'s text.
@inline(__always)
func mpiCheck(_ rc: Int32, _ what: @autoclosure () -> String) throws {
    if rc == CMPI_success() { return }
    throw MedleyError(.communication, "\(what()) failed: \(mpiErrorString(rc)) (MPI error \(rc))")
}

/// `MPI_Error_string` for a code.
func mpiErrorString(_ code: Int32) -> String {
    var buffer = [CChar](repeating: 0, count: Int(CMPI_max_error_string()) + 1)
    var length: Int32 = 0
    let rc = buffer.withUnsafeMutableBufferPointer { MPI_Error_string(code, $0.baseAddress, &length) }
    guard rc == CMPI_success() else { return "unknown MPI error" }
    return buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
}

extension MPIRuntime {
    /// The first line of `MPI_Get_library_version`, e.g. "Open MPI v4.1.4, …".
    public static func libraryVersion() -> String {
        var buffer = [CChar](repeating: 0, count: 8192)
        var length: Int32 = 0
        let rc = buffer.withUnsafeMutableBufferPointer { MPI_Get_library_version($0.baseAddress, &length) }
        guard rc == CMPI_success() else { return "unknown MPI" }
        let text = buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        return text.split(separator: "\n").first.map { $0.trimmingCharacters(in: .whitespaces) } ?? text
    }
}
