import ArgumentParser
import MedleyAdapters
import MedleyCore

/// `medley adapters`: lists the adapters found on the search path.
struct Adapters: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the chip adapters found (name, vendor, version, ABI, devices).",
        discussion: """
            Adapters are looked up in MEDLEY_ADAPTER_PATH (colon-separated), then next to the \
            medley executable. An adapter that fails to load is listed with the reason.
            """)

    func run() throws {
        let found = AdapterSearchPath.default.discover()
        if found.isEmpty {
            throw MedleyError(.invalidArgument, 
                "no adapters found in \(AdapterSearchPath.default.directories.joined(separator: ", ")); "
                    + "build them with `swift build` or set MEDLEY_ADAPTER_PATH")
        }
        var rows: [[String]] = [["name", "vendor", "version", "ABI", "opset", "devices", "path"]]
        var broken = 0
        for (name, path) in found {
            do {
                let library = try AdapterLibrary(path: path)
                let count = try library.deviceCount()
                var devices: [String] = []
                for index in 0..<count {
                    let device = try library.openDevice(index)
                    let d = device.description
                    devices.append("\(index): \(d.name) (\(d.vendor), \(ByteCount.describe(d.memoryBytes)))")
                    try device.close()
                }
                rows.append([
                    library.info.name, library.info.vendor, library.info.version,
                    "\(library.abiMajor).\(library.abiMinor)", "\(library.opsetVersion)",
                    devices.isEmpty ? "none" : devices.joined(separator: "; "), path,
                ])
            } catch {
                broken += 1
                rows.append([name, "-", "-", "-", "-", "unusable: \(error)", path])
            }
        }
        print(formatTable(rows))
        if broken > 0 {
            throw ExitCode(1)
        }
    }
}

/// Aligns rows of cells into columns.
func formatTable(_ rows: [[String]]) -> String {
    let columns = rows.map(\.count).max() ?? 0
    let widths = (0..<columns).map { c in rows.map { c < $0.count ? $0[c].count : 0 }.max() ?? 0 }
    return rows.map { row in
        row.enumerated().map { c, cell in
            c == row.count - 1 ? cell : cell + String(repeating: " ", count: widths[c] - cell.count)
        }.joined(separator: "  ")
    }.joined(separator: "\n")
}

import Foundation
