import COpenBLAS
import MedleyAdapters
import MedleyCore
import MedleyModel

/// One row-major sgemm as the cpu adapter issues it: C = op(A)·op(B) + beta·C,
/// with A [m,k] (or [k,m] transposed) and B [k,n] (or [n,k] transposed).
struct Gemm {
    var transA: Bool
    var transB: Bool
    var m: Int
    var n: Int
    var k: Int
    var beta: Float
}

/// One op launch of the benchmark, on tensors already on the device.
struct BenchCase {
    var op: String
    var role: String
    var shape: String
    var inputs: [TensorView]
    var outputs: [TensorView]
    var attributes: [String: Double] = [:]
    /// Nominal flops (see `BenchmarkRow`).
    var flops: Double
    /// Nominal bytes moved, for memory-bound ops.
    var bytes: Double?
    /// The plain sgemm products the op amounts to (matmul rows only).
    var gemms: [Gemm] = []
    let device: Device

    /// Launches the op and waits for it.
    func launch() throws {
        try device.launch(op, inputs: inputs, outputs: outputs, attributes: attributes)
        try device.synchronize()
    }

    /// Every op of opset v1 that the GPT uses, on the shapes it uses them with.
    ///
    /// Inputs are random and the same for the same seed on every device.
    /// Backward ops get the saved tensors of a real forward launch (means,
    /// rstds, log-sum-exps), so they see realistic values.
    static func all(config: ModelConfig, device: Device, seed: UInt64) throws -> [BenchCase] {
        var rng = SeededGenerator(seed: seed)
        func random(_ shape: [Int], _ low: Float = -1, _ high: Float = 1) throws -> TensorView {
            try device.upload(rng.floats(shape.reduce(1, *), low, high)).tensor(.f32, shape)
        }
        func zeros(_ shape: [Int]) throws -> TensorView {
            let buffer = try device.allocate(bytes: shape.reduce(1, *) * 4)
            try buffer.fill(byte: 0)
            return buffer.tensor(.f32, shape)
        }
        func ids(_ shape: [Int]) throws -> TensorView {
            try device.upload((0..<shape.reduce(1, *)).map { _ in Int32(rng.below(config.vocab)) }).tensor(.i32, shape)
        }
        let (b, t, c, v, nh) = (config.maxBatch, config.seq, config.dim, config.vocab, config.heads)
        let n = b * t
        let (dn, dc, dv) = (Double(n), Double(c), Double(v))
        var cases: [BenchCase] = []
        func add(
            _ op: String, _ role: String, _ shape: String, _ inputs: [TensorView], _ outputs: [TensorView],
            attributes: [String: Double] = [:], flops: Double, bytes: Double? = nil, gemms: [Gemm] = []
        ) {
            cases.append(
                BenchCase(
                    op: op, role: role, shape: shape, inputs: inputs, outputs: outputs, attributes: attributes,
                    flops: flops, bytes: bytes, gemms: gemms, device: device))
        }

        // Embeddings.
        let tokens = try ids([b, t])
        let wte = try random([v, c], -0.02, 0.02), wpe = try random([t, c], -0.02, 0.02)
        add("encoder_forward", "wte+wpe", "\(b)x\(t)->\(n)x\(c)", [tokens, wte, wpe], [try zeros([b, t, c])],
            flops: dn * dc, bytes: 4 * (dn + 3 * dn * dc))
        add("encoder_backward", "wte+wpe", "\(n)x\(c)->\(v)x\(c),\(t)x\(c)", [try random([b, t, c]), tokens],
            [try zeros([v, c]), try zeros([t, c])], flops: 2 * dn * dc, bytes: 4 * (dn + 5 * dn * dc))

        // LayerNorm (ln1, ln2, lnf share the shape).
        let lnX = try random([b, t, c]), lnW = try random([c], 0.5, 1.5), lnB = try random([c])
        let lnOut = try zeros([b, t, c]), mean = try zeros([b, t]), rstd = try zeros([b, t])
        try device.launch("layernorm_forward", inputs: [lnX, lnW, lnB], outputs: [lnOut, mean, rstd])
        add("layernorm_forward", "ln1/ln2/lnf", "\(n)x\(c)", [lnX, lnW, lnB], [lnOut, mean, rstd],
            flops: 8 * dn * dc, bytes: 4 * (2 * dn * dc + 2 * dc + 2 * dn))
        add("layernorm_backward", "ln1/ln2/lnf", "\(n)x\(c)", [try random([b, t, c]), lnX, lnW, mean, rstd],
            [try zeros([b, t, c]), try zeros([c]), try zeros([c])],
            flops: 16 * dn * dc, bytes: 4 * (4 * dn * dc + 5 * dc + 2 * dn))

        // Matmuls: the four of a block, then the tied head (no bias).
        let matmuls: [(role: String, inC: Int, outC: Int, bias: Bool)] = [
            ("attn.qkv", c, 3 * c, true), ("attn.proj", c, c, true), ("mlp.fc", c, 4 * c, true),
            ("mlp.proj", 4 * c, c, true), ("head (tied wte)", c, v, false),
        ]
        for mm in matmuls {
            let x = try random([b, t, mm.inC]), w = try random([mm.outC, mm.inC], -0.1, 0.1)
            let bias = try random([mm.outC])
            let work = dn * Double(mm.inC) * Double(mm.outC)
            let shape = "\(n)x\(mm.inC)->\(mm.outC)"
            add("matmul_forward", mm.role, shape, mm.bias ? [x, w, bias] : [x, w], [try zeros([b, t, mm.outC])],
                flops: 2 * work,
                gemms: [Gemm(transA: false, transB: true, m: n, n: mm.outC, k: mm.inC, beta: 0)])
            var grads = [try zeros([b, t, mm.inC]), try zeros([mm.outC, mm.inC])]
            if mm.bias { grads.append(try zeros([mm.outC])) }
            add("matmul_backward", mm.role, shape, [try random([b, t, mm.outC]), x, w], grads, flops: 4 * work,
                gemms: [
                    Gemm(transA: false, transB: false, m: n, n: mm.inC, k: mm.outC, beta: 1),  // dx += dout·W
                    Gemm(transA: true, transB: false, m: mm.outC, n: mm.inC, k: n, beta: 1),  // dW += doutᵀ·x
                ])
        }

        // Attention.
        let qkv = try random([b, t, 3 * c])
        let attOut = try zeros([b, t, c]), lse = try zeros([b, nh, t])
        let heads: [String: Double] = ["num_heads": Double(nh)]
        try device.launch("attention_forward", inputs: [qkv], outputs: [attOut, lse], attributes: heads)
        let attentionFlops = 2 * Double(b) * Double(t * t) * dc
        let attShape = "\(b)x\(t)x\(3 * c)->\(b)x\(t)x\(c) (\(nh) heads)"
        add("attention_forward", "attn", attShape, [qkv], [attOut, lse], attributes: heads, flops: attentionFlops)
        add("attention_backward", "attn", attShape, [try random([b, t, c]), qkv, attOut, lse],
            [try zeros([b, t, 3 * c])], attributes: heads, flops: 2 * attentionFlops)

        // Pointwise.
        let wide = Double(n * 4 * c)
        let geluX = try random([b, t, 4 * c], -3, 3)
        add("gelu_forward", "mlp", "\(n)x\(4 * c)", [geluX], [try zeros([b, t, 4 * c])], flops: 10 * wide,
            bytes: 4 * 2 * wide)
        add("gelu_backward", "mlp", "\(n)x\(4 * c)", [try random([b, t, 4 * c]), geluX], [try zeros([b, t, 4 * c])],
            flops: 20 * wide, bytes: 4 * 4 * wide)
        let narrow = dn * dc
        add("residual_forward", "residual", "\(n)x\(c)", [try random([b, t, c]), try random([b, t, c])],
            [try zeros([b, t, c])], flops: narrow, bytes: 4 * 3 * narrow)
        add("residual_backward", "residual", "\(n)x\(c)", [try random([b, t, c])],
            [try zeros([b, t, c]), try zeros([b, t, c])], flops: 2 * narrow, bytes: 4 * 5 * narrow)

        // Loss.
        let logits = try random([b, t, v], -2, 2), targets = try ids([b, t])
        let losses = try zeros([b, t]), lossLse = try zeros([b, t])
        try device.launch("crossentropy_forward", inputs: [logits, targets], outputs: [losses, lossLse])
        add("crossentropy_forward", "loss", "\(n)x\(v)", [logits, targets], [losses, lossLse],
            flops: 4 * dn * dv, bytes: 4 * (dn * dv + 3 * dn))
        add("crossentropy_backward", "loss", "\(n)x\(v)", [logits, targets, lossLse], [try zeros([b, t, v])],
            attributes: ["scale": 1 / dn], flops: 4 * dn * dv, bytes: 4 * (3 * dn * dv + 2 * dn))

        // Optimiser and gradient norm, over all parameters at once.
        let p = config.parameterCount
        let dp = Double(p)
        add("adamw_update", "all parameters", "\(p)", [try random([p], -0.01, 0.01)],
            [try random([p], -0.1, 0.1), try zeros([p]), try zeros([p])],
            attributes: [
                "lr": 1e-3, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1, "step": 1, "grad_scale": 1,
            ],
            flops: 14 * dp, bytes: 4 * 7 * dp)
        add("sum_squares", "all gradients", "\(p)", [try random([p])], [try zeros([1])], flops: 2 * dp, bytes: 4 * dp)
        return cases
    }
}

/// The same products as a matmul row, through plain OpenBLAS `cblas_sgemm` on host arrays.
final class SgemmBaseline {
    let gemms: [Gemm]
    private let operands: [(a: UnsafeMutablePointer<Float>, b: UnsafeMutablePointer<Float>, c: UnsafeMutablePointer<Float>)]

    init(_ gemms: [Gemm], seed: UInt64) {
        self.gemms = gemms
        var rng = SeededGenerator(seed: seed ^ 0x5_6e_6d_6d)
        func array(_ count: Int, _ low: Float, _ high: Float) -> UnsafeMutablePointer<Float> {
            let pointer = UnsafeMutablePointer<Float>.allocate(capacity: count)
            pointer.initialize(from: rng.floats(count, low, high), count: count)
            return pointer
        }
        operands = gemms.map { g in (array(g.m * g.k, -1, 1), array(g.k * g.n, -0.1, 0.1), array(g.m * g.n, 0, 0)) }
    }

    deinit {
        for o in operands {
            o.a.deallocate()
            o.b.deallocate()
            o.c.deallocate()
        }
    }

    /// Runs every product once (the caller has set OpenBLAS to one thread).
    func run() {
        for (g, o) in zip(gemms, operands) {
            cblas_sgemm(
                CblasRowMajor, g.transA ? CblasTrans : CblasNoTrans, g.transB ? CblasTrans : CblasNoTrans,
                Int32(g.m), Int32(g.n), Int32(g.k), 1, o.a, Int32(g.transA ? g.m : g.k), o.b,
                Int32(g.transB ? g.k : g.n), g.beta, o.c, Int32(g.n))
        }
    }
}
