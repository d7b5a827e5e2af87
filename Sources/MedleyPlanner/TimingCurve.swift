/// Milliseconds of one layer kind on one chip type as a function of the
/// microbatch size, from the profile's measured sizes.
///
/// Between two measured sizes the time is the straight line through them (a
/// fixed cost plus a cost per sequence). Above the largest size the last
/// segment's line continues (never below the largest measurement); with a
/// single measured size the time is proportional to the microbatch. Below the
/// smallest size the first segment's line continues, but never below
/// proportional scaling of the smallest measurement, so an extrapolated time
/// stays positive.
struct TimingCurve: Sendable {
    /// Measured sizes, ascending, with their forward and backward milliseconds.
    private let sizes: [Double]
    private let forward: [Double]
    private let backward: [Double]

    /// Builds the curve from timings of one kind (at least one, distinct sizes; the caller validates).
    init(_ timings: [DeviceProfile.LayerTiming]) {
        let sorted = timings.sorted { $0.microbatch < $1.microbatch }
        sizes = sorted.map { Double($0.microbatch) }
        forward = sorted.map(\.forwardMs)
        backward = sorted.map(\.backwardMs)
    }

    /// Forward and backward milliseconds of one layer at `microbatch` sequences.
    func ms(microbatch: Int) -> (forward: Double, backward: Double) {
        let b = Double(microbatch)
        return (Self.interpolate(sizes, forward, at: b), Self.interpolate(sizes, backward, at: b))
    }

    private static func interpolate(_ x: [Double], _ y: [Double], at b: Double) -> Double {
        guard x.count > 1 else { return y[0] * b / x[0] }
        // The segment [i, i + 1] that holds b, or the nearest end segment.
        var i = 0
        while i < x.count - 2 && b > x[i + 1] { i += 1 }
        let slope = (y[i + 1] - y[i]) / (x[i + 1] - x[i])
        let line = y[i] + slope * (b - x[i])
        if b < x[0] { return max(line, y[0] * b / x[0]) }
        // A falling last segment would extrapolate towards zero: a larger microbatch never takes less time.
        if b > x[x.count - 1] { return max(line, y[x.count - 1]) }
        return line
    }
}
