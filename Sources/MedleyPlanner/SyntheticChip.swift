/// An illustrative chip type for the simulator: a few round figures from which
/// a ``DeviceProfile`` is derived for any GPT shape.
///
/// The built-in types A–D are *loosely modelled on classes* of public
/// accelerators (a current flagship GPU, a 64 GiB NPU, a previous-generation
/// 32 GiB GPU, a 128 GiB large-memory accelerator). Their figures are sustained
/// rather than peak and are not measurements or claims about any product; they
/// exist so that `medley simulate` can show how the planner treats chips that
/// differ in speed and memory at scale.
public struct SyntheticChip: Sendable, Hashable {
    /// The type's key in `--devices` (e.g. `A`).
    public var key: String
    /// What it is loosely modelled on, for tables.
    public var summary: String
    /// Sustained dense matmul throughput, TFLOP/s.
    public var teraflops: Double
    /// Device memory in bytes.
    public var memoryBytes: Int
    /// Sustained memory bandwidth, bytes per second.
    public var bytesPerSecond: Double
    /// Fixed milliseconds per layer and pass (kernel launches, synchronisation).
    public var launchMs: Double

    public init(key: String, summary: String, teraflops: Double, memoryBytes: Int, bytesPerSecond: Double, launchMs: Double) {
        self.key = key
        self.summary = summary
        self.teraflops = teraflops
        self.memoryBytes = memoryBytes
        self.bytesPerSecond = bytesPerSecond
        self.launchMs = launchMs
    }

    /// The built-in types A–D.
    public static let catalog: [SyntheticChip] = [
        SyntheticChip(key: "A", summary: "flagship GPU class: 80 GiB, 400 TFLOP/s, 3.3 TB/s",
                      teraflops: 400, memoryBytes: 80 << 30, bytesPerSecond: 3.3e12, launchMs: 0.02),
        SyntheticChip(key: "B", summary: "NPU class: 64 GiB, 180 TFLOP/s, 1.6 TB/s",
                      teraflops: 180, memoryBytes: 64 << 30, bytesPerSecond: 1.6e12, launchMs: 0.03),
        SyntheticChip(key: "C", summary: "previous-generation GPU class: 32 GiB, 60 TFLOP/s, 0.9 TB/s",
                      teraflops: 60, memoryBytes: 32 << 30, bytesPerSecond: 0.9e12, launchMs: 0.03),
        SyntheticChip(key: "D", summary: "large-memory accelerator class: 128 GiB, 250 TFLOP/s, 3.7 TB/s",
                      teraflops: 250, memoryBytes: 128 << 30, bytesPerSecond: 3.7e12, launchMs: 0.025),
    ]

    /// The network the simulator assumes between chips: 25 GB/s per link (200 Gb/s), 5 µs per message.
    public static let network = NetworkModel(latencySeconds: 5e-6, bytesPerSecond: 25e9)

    /// The chip's profile for a GPT of this shape (see ``ModelCost/gpt(layers:dim:heads:seq:vocab:)``).
    ///
    /// A layer's forward takes `launchMs` plus, per sequence, its matmul FLOPs at `teraflops`
    /// plus its activation bytes at `bytesPerSecond`; backward twice the per-sequence part.
    /// FLOPs per sequence (T positions, C channels, V tokens): a block 24·T·C² + 4·T²·C, the
    /// head 2·T·C·V, the embedding none. AdamW moves 7 bytes per parameter byte (reads the
    /// parameter, gradient and both moments, writes three).
    public func profile(layers: Int, dim: Int, heads: Int, seq: Int, vocab: Int) -> DeviceProfile {
        let cost = ModelCost.gpt(layers: layers, dim: dim, heads: heads, seq: seq, vocab: vocab)
        let (t, c, v) = (Double(seq), Double(dim), Double(vocab))
        let flops: [ModelCost.Layer.Kind: Double] = [.embedding: 0, .block: 24 * t * c * c + 4 * t * t * c, .head: 2 * t * c * v]
        let activation: [ModelCost.Layer.Kind: Int] = [
            .embedding: cost.layers[0].activationBytesPerSequence,
            .block: cost.layers[1].activationBytesPerSequence,
            .head: cost.layers[cost.layers.count - 1].activationBytesPerSequence,
        ]
        var timings: [DeviceProfile.LayerTiming] = []
        for kind in ModelCost.Layer.Kind.allCases {
            let perSequence = (flops[kind]! / (teraflops * 1e12) + Double(activation[kind]!) / bytesPerSecond) * 1000
            for b in [1, 8] {
                timings.append(DeviceProfile.LayerTiming(
                    kind: kind, microbatch: b, forwardMs: launchMs + Double(b) * perSequence,
                    backwardMs: launchMs + 2 * Double(b) * perSequence))
            }
        }
        return DeviceProfile(
            chip: key, adapter: "", vendor: "illustrative", name: summary, memoryBytes: memoryBytes, timings: timings,
            optimizerMsPerParameterByte: 7 / bytesPerSecond * 1000)
    }
}
