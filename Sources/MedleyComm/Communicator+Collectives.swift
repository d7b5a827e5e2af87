import CMPI
import MedleyCore

extension Communicator {
    /// Reduces `values` element-wise over all ranks with `op`; every rank gets the result.
    public func allreduce<T: CommunicableElement>(_ values: [T], op: ReductionOp) throws -> [T] {
        var result = values
        try result.withUnsafeMutableBufferPointer { try allreduce(inPlace: $0, op: op) }
        return result
    }

    /// Reduces a buffer in place (`MPI_IN_PLACE`) over all ranks with `op`.
    public func allreduce<T: CommunicableElement>(inPlace buffer: UnsafeMutableBufferPointer<T>, op: ReductionOp) throws {
        guard buffer.count <= Int(Int32.max) else {
            throw MedleyError(.invalidArgument, "allreduce of \(buffer.count) elements exceeds MPI's count limit")
        }
        try mpiCheck(
            MPI_Allreduce(CMPI_in_place(), buffer.baseAddress, Int32(buffer.count), T.datatype.handle, op.handle, handle),
            "MPI_Allreduce(\(op), \(buffer.count) elements)")
    }

    /// Gathers the same number of elements from every rank; the result is rank 0's, then rank 1's, ….
    public func allgather<T: CommunicableElement>(_ values: [T]) throws -> [T] {
        let n = values.count
        var result = [T](unsafeUninitializedCapacity: n * size) { _, c in c = n * size }
        try values.withUnsafeBufferPointer { send in
            try result.withUnsafeMutableBufferPointer { recv in
                try mpiCheck(
                    MPI_Allgather(send.baseAddress, Int32(n), T.datatype.handle,
                                  recv.baseAddress, Int32(n), T.datatype.handle, handle),
                    "MPI_Allgather(\(n) elements)")
            }
        }
        return result
    }

    /// Gathers a different number of elements from every rank (`MPI_Allgatherv`);
    /// returns one array per rank. Counts are exchanged first, so ranks need not agree on them.
    public func allgatherv<T: CommunicableElement>(_ values: [T], maxCountPerRank: Int = 1 << 28) throws -> [[T]] {
        let counts = try allgather([Int32(clamping: values.count)]).map(Int.init)
        if let bad = counts.firstIndex(where: { $0 < 0 || $0 > maxCountPerRank }) {
            throw MedleyError(.corruption, "rank \(bad) offers \(counts[bad]) elements to allgatherv, over the \(maxCountPerRank) allowed")
        }
        var displacements = [Int32](repeating: 0, count: size)
        var total = 0
        for r in 0..<size {
            displacements[r] = Int32(total)
            total += counts[r]
        }
        guard total <= Int(Int32.max) else { throw MedleyError(.invalidArgument, "allgatherv total \(total) exceeds MPI's count limit") }
        var flat = [T](unsafeUninitializedCapacity: total) { _, c in c = total }
        let counts32 = counts.map { Int32($0) }
        try values.withUnsafeBufferPointer { send in
            try flat.withUnsafeMutableBufferPointer { recv in
                try mpiCheck(
                    MPI_Allgatherv(send.baseAddress, Int32(values.count), T.datatype.handle,
                                   recv.baseAddress, counts32, displacements, T.datatype.handle, handle),
                    "MPI_Allgatherv")
            }
        }
        return (0..<size).map { r in Array(flat[Int(displacements[r])..<Int(displacements[r]) + counts[r]]) }
    }

    /// Gathers contiguous pieces of one buffer in place: rank `r` contributes
    /// `buffer[ranges[r]]` and, on return, every rank's piece is in every rank's buffer.
    ///
    /// `ranges` must be the same on every rank, in rank order, inside the buffer, and not
    /// overlap (they need not cover it). No intermediate copy is made.
    public func allgather<T: CommunicableElement>(inPlace buffer: UnsafeMutableBufferPointer<T>, ranges: [Range<Int>]) throws {
        guard ranges.count == size else {
            throw MedleyError(.invalidArgument, "allgather in place: \(ranges.count) ranges for \(size) ranks")
        }
        for (r, range) in ranges.enumerated() {
            guard range.lowerBound >= 0, range.upperBound <= buffer.count, range.upperBound <= Int(Int32.max) else {
                throw MedleyError(.invalidArgument, "allgather in place: rank \(r)'s range \(range) is outside the buffer of \(buffer.count)")
            }
            if r > 0 && range.lowerBound < ranges[r - 1].upperBound && !range.isEmpty && !ranges[r - 1].isEmpty {
                throw MedleyError(.invalidArgument, "allgather in place: ranges of ranks \(r - 1) and \(r) overlap or are out of order")
            }
        }
        let counts = ranges.map { Int32($0.count) }
        let displacements = ranges.map { Int32($0.lowerBound) }
        try mpiCheck(
            MPI_Allgatherv(CMPI_in_place(), 0, T.datatype.handle,
                           buffer.baseAddress, counts, displacements, T.datatype.handle, handle),
            "MPI_Allgatherv(in place, \(buffer.count) elements)")
    }

    /// Broadcasts `values` from `root`; other ranks' arguments are ignored and the root's array
    /// (of any length) is returned on every rank.
    public func broadcast<T: CommunicableElement>(_ values: [T], root: Int) throws -> [T] {
        try checkPeer(root, "broadcast")
        var count = [Int64(values.count)]
        try count.withUnsafeMutableBufferPointer { try broadcast(inPlace: $0, root: root) }
        var result = rank == root ? values : [T](unsafeUninitializedCapacity: Int(count[0])) { _, c in c = Int(count[0]) }
        try result.withUnsafeMutableBufferPointer { try broadcast(inPlace: $0, root: root) }
        return result
    }

    /// Broadcasts a buffer in place from `root`; every rank's buffer must have the same count.
    public func broadcast<T: CommunicableElement>(inPlace buffer: UnsafeMutableBufferPointer<T>, root: Int) throws {
        try mpiCheck(
            MPI_Bcast(buffer.baseAddress, Int32(buffer.count), T.datatype.handle, Int32(root), handle),
            "MPI_Bcast(\(buffer.count) elements from rank \(root))")
    }
}
