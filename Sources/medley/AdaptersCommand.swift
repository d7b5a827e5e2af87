import ArgumentParser
import MedleyAdapters
import MedleyCore

/// `medley adapters`: lists the adapters found on the search path.
struct Adapters: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the chip adapters found (name, vendor, version, ABI, devices).",
        discussion: """
            Adapters are looked up in MEDLEY_ADAPTER_PATH (colon-separated), then next to the \
            medley executable. An adapter that fails to load is listed with the reason; one that loads \
            but whose runtime finds no device here (e.g. no OpenCL platform) is listed with "none here" and why.
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
        var loaded: [(fileName: String, pluginName: String, path: String)] = []
        let fileNames = Set(found.map(\.name))
        for (name, path) in found {
            do {
                let library = try AdapterLibrary(path: path)
                let devices: String
                do {
                    var listed: [String] = []
                    for index in 0..<(try library.deviceCount()) {
                        let device = try library.openDevice(index)
                        let d = device.description
                        listed.append("\(index): \(d.name) (\(d.vendor), \(ByteCount.describe(d.memoryBytes)))")
                        try device.close()
                    }
                    devices = listed.isEmpty ? "none" : listed.joined(separator: "; ")
                } catch let error as MedleyError where error.adapterStatus == .unavailable && error.message.contains("device_count: ") {
                    // The library loads but its runtime finds nothing here (e.g. no OpenCL platform):
                    // listed, with the adapter's own reason, and not counted as broken.
                    devices = "none here: \(Self.reason(error))"
                }
                loaded.append((name, library.info.name, path))
                rows.append([
                    library.info.name, library.info.vendor, library.info.version,
                    "\(library.abiMajor).\(library.abiMinor)", "\(library.opsetVersion)", devices, path,
                ])
            } catch {
                broken += 1
                rows.append([name, "-", "-", "-", "-", "unusable: \(error)", path])
            }
        }
        print(formatTable(rows))
        for entry in loaded {
            let sharing = loaded.filter { $0.pluginName == entry.pluginName }.map(\.path)
            if let note = Self.nameNote(
                fileName: entry.fileName, pluginName: entry.pluginName, path: entry.path, fileNames: fileNames, sharing: sharing)
            {
                print(note)
            }
        }
        if broken > 0 {
            throw ExitCode(1)
        }
    }
}

extension Adapters {
    /// The adapter's own message, without the "adapter X: device_count: " context in front of it.
    static func reason(_ error: MedleyError) -> String {
        let text = error.message
        if let range = text.range(of: "device_count: ") { return String(text[range.upperBound...]) }
        return text
    }

    /// A line for a library whose file name and `plugin_info` name differ (nil when they agree):
    /// which names find it (docs/adapters.md, "Names").
    static func nameNote(fileName: String, pluginName: String, path: String, fileNames: Set<String>, sharing: [String]) -> String? {
        guard fileName != pluginName else { return nil }
        func base(_ path: String) -> String { path.split(separator: "/").last.map(String.init) ?? path }
        let byPlugin: String
        if fileNames.contains(pluginName) {
            byPlugin = "not by its plugin name, which finds \(AdapterSearchPath.fileName(for: pluginName)) (file names come first)"
        } else if sharing.count > 1 {
            byPlugin = "not by its plugin name, which \(sharing.count) libraries report (\(sharing.map(base).joined(separator: ", ")))"
        } else {
            byPlugin = "or by its plugin name '\(pluginName)'"
        }
        return "note: \(base(path)) reports the plugin name '\(pluginName)', not '\(fileName)': it is found by its file name '\(fileName)', \(byPlugin)"
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
