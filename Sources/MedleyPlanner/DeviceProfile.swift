/// How fast and how large one *chip type* is: measured by `medley profile`, or
/// synthetic (the simulator's built-in types). The planner never measures; it
/// only reads profiles.
public struct DeviceProfile: Codable, Sendable, Hashable {
    /// Time of one layer kind at one microbatch size.
    public struct LayerTiming: Codable, Sendable, Hashable {
        public var kind: ModelCost.Layer.Kind
        /// Sequences in the microbatch.
        public var microbatch: Int
        /// Forward milliseconds of ONE layer of this kind on the microbatch.
        public var forwardMs: Double
        /// Backward milliseconds (gradients of inputs and parameters) of ONE layer.
        public var backwardMs: Double

        public init(kind: ModelCost.Layer.Kind, microbatch: Int, forwardMs: Double, backwardMs: Double) {
            self.kind = kind
            self.microbatch = microbatch
            self.forwardMs = forwardMs
            self.backwardMs = backwardMs
        }
    }

    /// The chip type's key: what makes two devices interchangeable, e.g.
    /// `cpu` or `sim{kernels=cpu,speed=0.5,vendor=Acme}`. Devices of one type share a profile.
    public var chip: String
    /// The adapter that drives it (`cpu`, `sim`, …); "" for synthetic types.
    public var adapter: String
    /// Vendor and device name as the adapter reports them (for tables).
    public var vendor: String
    public var name: String
    /// Device memory in bytes.
    public var memoryBytes: Int
    /// Timings per layer kind and microbatch size. Between and beyond measured
    /// sizes the planner interpolates linearly (a fixed cost plus a cost per sequence).
    public var timings: [LayerTiming]
    /// AdamW milliseconds per byte of parameters updated (4 bytes per float).
    public var optimizerMsPerParameterByte: Double

    public init(
        chip: String, adapter: String, vendor: String, name: String, memoryBytes: Int, timings: [LayerTiming],
        optimizerMsPerParameterByte: Double
    ) {
        self.chip = chip
        self.adapter = adapter
        self.vendor = vendor
        self.name = name
        self.memoryBytes = memoryBytes
        self.timings = timings
        self.optimizerMsPerParameterByte = optimizerMsPerParameterByte
    }
}

/// The links between chips, priced α–β: sending n bytes takes
/// `latencySeconds + n / bytesPerSecond`.
public struct NetworkModel: Codable, Sendable, Hashable {
    /// α: seconds per message.
    public var latencySeconds: Double
    /// β⁻¹: bytes per second of one link.
    public var bytesPerSecond: Double

    public init(latencySeconds: Double, bytesPerSecond: Double) {
        self.latencySeconds = latencySeconds
        self.bytesPerSecond = bytesPerSecond
    }

    /// Seconds to send `bytes` point to point.
    public func sendSeconds(bytes: Int) -> Double {
        latencySeconds + Double(bytes) / bytesPerSecond
    }
}

/// The chips a plan may use: each device instance, in rank order, with the
/// index of its profile. Instances of one type share a profile.
public struct DeviceInventory: Codable, Sendable, Hashable {
    public var profiles: [DeviceProfile]
    /// `devices[i]` is the profile index of device (rank) i.
    public var devices: [Int]

    public init(profiles: [DeviceProfile], devices: [Int]) {
        self.profiles = profiles
        self.devices = devices
    }
}
