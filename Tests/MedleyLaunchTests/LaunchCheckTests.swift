import Foundation
import MedleyTestSupport
import Testing

/// `medley launch` consults `medley adapter check` as `medley train` does.
@Suite("medley launch: adapter check records")
struct LaunchCheckTests {
    static let job = """
        name: launch-check
        model: {layers: 1, dim: 16, heads: 2, seq: 16, batch: 2}
        train: {steps: 2, eval_every: 0}
        devices: [cpu, reference]
        """

    @Test("an unchecked adapter: one warning for the launch; require_checked: true refuses it in one line, no run directory")
    func warnsAndRefuses() throws {
        let (directory, job) = try LaunchTests.write(Self.job)
        let environment = ["MEDLEY_CACHE_DIR": directory + "/cache"]
        let result = try TestSupport.medley(
            ["launch", job, "--run-dir", directory + "/run", "--timeout", "120"], environment: environment, timeout: 240)
        #expect(result.status == 0, "\(result.output)")
        let warnings = result.output.split(separator: "\n").filter { $0.hasPrefix("warning:") }
        #expect(warnings.count == 1 && warnings[0].hasPrefix("warning: adapter cpu (") && warnings[0].contains("`medley adapter check cpu`"),
                "the reference adapter is exempt, cpu is warned once: \(result.output)")

        let (strictDirectory, strict) = try LaunchTests.write(Self.job + "\nrequire_checked: true\n")
        let refused = try TestSupport.medley(
            ["launch", strict, "--run-dir", strictDirectory + "/run"], environment: ["MEDLEY_CACHE_DIR": strictDirectory + "/cache"],
            timeout: 120)
        #expect(refused.status != 0)
        let lines = refused.stderr.split(separator: "\n")
        #expect(lines.count == 1 && lines[0].hasPrefix("Error: require_checked: adapter cpu ("), "\(refused.output)")
        #expect(!FileManager.default.fileExists(atPath: strictDirectory + "/run"), "the run directory was made before the refusal")
    }
}
