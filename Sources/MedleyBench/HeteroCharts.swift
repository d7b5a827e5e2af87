import Foundation
import MedleyCore

/// Draws `medley bench hetero`'s charts with `benchmarks/plot-hetero.py` (matplotlib).
public enum HeteroCharts {
    /// The script's path inside a checkout.
    static let relativePath = "benchmarks/plot-hetero.py"

    /// The plotting script: `explicit` when given, else `benchmarks/plot-hetero.py` in the
    /// checkout the executable was built in (its build directory's parent, walking up), else under
    /// the current directory. Throws `notFound` in one line naming where it looked.
    public static func locateScript(_ explicit: String?, executable: String = ChildProcess.currentExecutable) throws -> String {
        let files = FileManager.default
        if let explicit {
            guard files.isReadableFile(atPath: explicit) else {
                throw MedleyError(.notFound, "--plot-script \(explicit): no such readable file")
            }
            return explicit
        }
        var candidates: [String] = []
        var directory = URL(fileURLWithPath: executable).resolvingSymlinksInPath().deletingLastPathComponent()
        while directory.path != "/" {
            candidates.append(directory.appendingPathComponent(relativePath).path)
            directory = directory.deletingLastPathComponent()
        }
        candidates.append(files.currentDirectoryPath + "/" + relativePath)
        guard let found = candidates.first(where: { files.isReadableFile(atPath: $0) }) else {
            throw MedleyError(
                .notFound,
                "cannot find \(relativePath) above \(executable) nor under \(files.currentDirectoryPath); run from a Medley checkout or pass --plot-script FILE")
        }
        return found
    }

    /// The Python that has Debian's matplotlib: `/usr/bin/python3` where it exists, else the
    /// first `python3` on the PATH.
    static var python: (path: String, arguments: [String]) {
        FileManager.default.isExecutableFile(atPath: "/usr/bin/python3") ? ("/usr/bin/python3", []) : ("/usr/bin/env", ["python3"])
    }

    /// Runs the script on `report` (a report.json), writing the charts into `out`. Throws with
    /// the script's last error line (matplotlib missing: what to install) when it fails.
    public static func draw(script: String, report: String, out: String, timeoutSeconds: Double = 120) throws {
        let (python, prefix) = python
        let result = try ChildProcess.run(python, prefix + [script, report, out], timeoutSeconds: timeoutSeconds, mergeOutput: true)
        guard result.status == 0, !result.timedOut else {
            let last = result.stdout.split(separator: "\n").last.map(String.init) ?? "exit status \(result.status)"
            throw MedleyError(.internalError, "drawing the charts with \(script) failed: \(last)")
        }
    }
}
