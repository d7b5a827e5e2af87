/// How far a candidate's result may lie from the reference's.
///
/// An element passes when `|got − expected| ≤ atol · max(1, max|expected|) + rtol · |expected|`:
/// the absolute part scales with the tensor's magnitude, so sums of many terms
/// are judged fairly, and the relative part covers large elements.
public struct Tolerance: Sendable, Hashable, Codable, CustomStringConvertible {
    /// Relative tolerance.
    public var rtol: Double
    /// Absolute tolerance, relative to the tensor's largest magnitude (at least 1).
    public var atol: Double

    /// Creates a tolerance.
    public init(rtol: Double, atol: Double) {
        self.rtol = rtol
        self.atol = atol
    }

    /// Default tolerance for results computed in `dtype`.
    public static func forDType(_ dtype: DType) -> Tolerance {
        switch dtype {
        case .f32, .i32: Tolerance(rtol: 1e-4, atol: 1e-5)
        case .f16: Tolerance(rtol: 4e-3, atol: 2e-3)
        case .bf16: Tolerance(rtol: 3e-2, atol: 1.6e-2)
        }
    }

    public var description: String { "rtol \(rtol), atol \(atol)" }
}

/// The worst element of a comparison.
struct Discrepancy {
    var index: Int
    var got: Float
    var expected: Float
    var allowed: Double
    /// |got − expected| / allowed; above 1 fails. Infinite for a NaN where a number was expected.
    var ratio: Double

    var passed: Bool { ratio <= 1 }

    /// "out[1, 3, 5] = …": the element by its index in the tensor's own shape.
    func describe(_ tensor: String, shape: [Int]) -> String {
        let diff = abs(Double(got) - Double(expected))
        return "\(tensor)\(indexText(index, shape)) = \(fmt(got)), reference \(fmt(expected)) "
            + "(|diff| \(fmt(diff)) \(passed ? "<=" : ">") tolerance \(fmt(allowed)))"
    }
}

/// Compares two float tensors element by element and returns the worst element.
func compare(_ got: [Float], _ expected: [Float], tolerance: Tolerance) -> Discrepancy {
    let scale = max(1, expected.reduce(0) { max($0, $1.isFinite ? abs(Double($1)) : 0) })
    var worst = Discrepancy(index: 0, got: got.first ?? 0, expected: expected.first ?? 0, allowed: 0, ratio: 0)
    for i in 0..<min(got.count, expected.count) {
        let g = got[i], e = expected[i]
        let allowed = tolerance.atol * scale + tolerance.rtol * abs(Double(e))
        let ratio: Double
        if e.isNaN && g.isNaN {
            ratio = 0
        } else if !g.isFinite || !e.isFinite {
            ratio = g == e ? 0 : .infinity
        } else {
            ratio = abs(Double(g) - Double(e)) / allowed
        }
        if ratio > worst.ratio || i == 0 {
            worst = Discrepancy(index: i, got: g, expected: e, allowed: allowed, ratio: ratio)
        }
    }
    return worst
}

/// A flat element index as an index in `shape`, e.g. "[1, 3, 5]" (the flat index for rank 0 or 1).
func indexText(_ flat: Int, _ shape: [Int]) -> String {
    guard shape.count > 1, shape.allSatisfy({ $0 > 0 }) else { return "[\(flat)]" }
    var rest = flat
    var index = [Int](repeating: 0, count: shape.count)
    for d in stride(from: shape.count - 1, through: 0, by: -1) {
        index[d] = rest % shape[d]
        rest /= shape[d]
    }
    return "[" + index.map(String.init).joined(separator: ", ") + "]"
}

/// Formats a number compactly for reports.
func fmt(_ value: Float) -> String { fmt(Double(value)) }

func fmt(_ value: Double) -> String {
    if value.isNaN { return "nan" }
    if value.isInfinite { return value > 0 ? "inf" : "-inf" }
    let magnitude = abs(value)
    if magnitude != 0 && (magnitude < 1e-3 || magnitude >= 1e5) {
        var text = String(format: "%.3e", value)
        if let e = text.firstIndex(of: "e") {
            let exponent = Int(text[text.index(after: e)...]) ?? 0
            text = String(text[..<e]) + "e\(exponent)"
        }
        return text
    }
    return String(format: "%.5g", value)
}

import Foundation
