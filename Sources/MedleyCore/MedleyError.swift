/// An error raised by Medley: a domain code, a message that says what was wrong
/// and what to do, an optional underlying cause, and where it was raised.
///
/// Every module throws `MedleyError`, so the CLI can print any failure as one
/// readable line (`description`) and pick an exit code from `code`.
public struct MedleyError: Error, CustomStringConvertible, Sendable {
    /// What kind of failure this is. A struct over a private enum so codes can grow.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Value: Hashable, Sendable {
            case invalidArgument, notFound, adapterLoad, adapterCall, conformance
            case deviceLost, communication, mismatch, corruption, io, timeout, outOfMemory, unsupported, internalError
        }
        private let value: Value
        private init(_ value: Value) { self.value = value }

        /// Bad input from a user: an option, a file, a spec.
        public static let invalidArgument = Code(.invalidArgument)
        /// Something named does not exist (a file, an adapter, a device).
        public static let notFound = Code(.notFound)
        /// An adapter library could not be loaded or its table is not acceptable.
        public static let adapterLoad = Code(.adapterLoad)
        /// An adapter entry returned an error object.
        public static let adapterCall = Code(.adapterCall)
        /// An adapter does not conform to the ABI or opset.
        public static let conformance = Code(.conformance)
        /// A device failed and must be closed (the adapter said DEVICE_LOST).
        public static let deviceLost = Code(.deviceLost)
        /// An MPI or socket operation failed.
        public static let communication = Code(.communication)
        /// Ranks disagree about something they must agree on.
        public static let mismatch = Code(.mismatch)
        /// Data failed a checksum or could not be decoded.
        public static let corruption = Code(.corruption)
        /// A file could not be read or written.
        public static let io = Code(.io)
        /// A wait ran past its deadline.
        public static let timeout = Code(.timeout)
        /// Memory ran out on a device or the host.
        public static let outOfMemory = Code(.outOfMemory)
        /// A feature, op or dtype is not supported.
        public static let unsupported = Code(.unsupported)
        /// A bug in Medley.
        public static let internalError = Code(.internalError)

        public var description: String {
            switch value {
            case .invalidArgument: "invalid argument"
            case .notFound: "not found"
            case .adapterLoad: "adapter load"
            case .adapterCall: "adapter call"
            case .conformance: "conformance"
            case .deviceLost: "device lost"
            case .communication: "communication"
            case .mismatch: "mismatch"
            case .corruption: "corruption"
            case .io: "I/O"
            case .timeout: "timeout"
            case .outOfMemory: "out of memory"
            case .unsupported: "unsupported"
            case .internalError: "internal error"
            }
        }
    }

    /// The kind of failure.
    public var code: Code
    /// What was wrong and, where it helps, what to do about it.
    public var message: String
    /// The error that caused this one, if any.
    public var cause: (any Error & Sendable)?
    /// Source location that raised the error (for bug reports).
    public var location: String

    /// Creates an error; the location defaults to the caller's file and line.
    public init(
        _ code: Code, _ message: String, cause: (any Error & Sendable)? = nil,
        file: String = #fileID, line: Int = #line
    ) {
        self.code = code
        self.message = message
        self.cause = cause
        self.location = "\(file):\(line)"
    }

    /// The message, followed by the cause's description when there is one.
    public var description: String {
        if let cause { return "\(message) (\(cause))" }
        return message
    }
}
