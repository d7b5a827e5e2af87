import Foundation
import MedleyTestSupport
import Testing

/// `medley train` consults `medley adapter check`; `medley adapters` flags names that differ.
@Suite("medley train and adapter check", .serialized)
struct AdapterTrustTests {
    /// A tiny job on one device entry naming `adapter`.
    static func job(adapter: String, extra: String = "") -> String {
        """
        name: trust
        model: {layers: 1, dim: 16, heads: 2, seq: 16, batch: 2}
        train: {steps: 2, eval_every: 0}
        devices: [{adapter: \(adapter)}]
        \(extra)
        """
    }

    /// A directory holding `job.yaml` for `yaml`, and a fresh cache for the check records.
    static func setUp(_ yaml: String) throws -> (job: String, environment: [String: String]) {
        let dir = try TestSupport.temporaryDirectory("medley-trust")
        try yaml.write(toFile: dir + "/job.yaml", atomically: true, encoding: .utf8)
        return (dir + "/job.yaml", ["MEDLEY_CACHE_DIR": dir + "/cache"])
    }

    @Test("an unchecked adapter trains with one warning; once checked, no warning")
    func warnsUntilChecked() throws {
        let library = try TestSupport.templateAdapter(into: try TestSupport.temporaryDirectory())
        let (job, environment) = try Self.setUp(Self.job(adapter: library))
        let first = try TestSupport.medley(["train", job, "--timeout", "120"], environment: environment, timeout: 180)
        #expect(first.status == 0, "\(first.output)")
        let warnings = first.stderr.split(separator: "\n").filter { $0.hasPrefix("warning:") }
        #expect(warnings == [
            "warning: adapter template (\(library)) has not passed `medley adapter check` in this build; run `medley adapter check \(library)` (or set require_checked: true to refuse unchecked adapters)",
        ], "\(first.output)")
        #expect(first.stdout.contains("done: 2 steps"), "\(first.output)")

        let check = try TestSupport.medley(["adapter", "check", library], environment: environment)
        #expect(check.status == 0, "\(check.output)")
        let second = try TestSupport.medley(["train", job, "--timeout", "120"], environment: environment, timeout: 180)
        #expect(second.status == 0 && !second.output.contains("warning:"), "\(second.output)")
    }

    @Test("require_checked: true refuses an unchecked adapter in one line, non-zero, before any rank starts")
    func refusesUnchecked() throws {
        let library = try TestSupport.templateAdapter(into: try TestSupport.temporaryDirectory())
        let (job, environment) = try Self.setUp(Self.job(adapter: library, extra: "require_checked: true"))
        let refused = try TestSupport.medley(["train", job, "--timeout", "120"], environment: environment, timeout: 180)
        #expect(refused.status != 0)
        let lines = refused.stderr.split(separator: "\n")
        #expect(lines.count == 1 && lines[0].hasPrefix("Error: require_checked: adapter template (\(library)) has not passed"), "\(refused.output)")
        #expect(!refused.stdout.contains("step 1"), "a rank started: \(refused.output)")
        // Checked and passed: it trains.
        #expect(try TestSupport.medley(["adapter", "check", library], environment: environment).status == 0)
        let trained = try TestSupport.medley(["train", job, "--timeout", "120"], environment: environment, timeout: 180)
        #expect(trained.status == 0 && trained.stdout.contains("done: 2 steps"), "\(trained.output)")
    }

    @Test("require_checked must be true or false")
    func requireCheckedType() throws {
        let (job, environment) = try Self.setUp(Self.job(adapter: "reference", extra: "require_checked: maybe"))
        let result = try TestSupport.medley(["train", job, "--dry-run"], environment: environment)
        #expect(result.status != 0)
        let lines = result.stderr.split(separator: "\n")
        #expect(lines.count == 1 && lines[0].contains("require_checked: expected true or false, got 'maybe'"), "\(result.stderr)")
    }

    @Test("a failed check: the warning says FAILED and names the first failure; the reference adapter is exempt")
    func failedAndExempt() throws {
        let library = try TestSupport.brokenAdapter("off-by", into: try TestSupport.temporaryDirectory())
        let (job, environment) = try Self.setUp(Self.job(adapter: library))
        let check = try TestSupport.medley(["adapter", "check", library], environment: environment)
        #expect(check.status != 0)
        let dry = try TestSupport.medley(["train", job, "--dry-run"], environment: environment)
        #expect(dry.status == 0, "\(dry.output)")
        let warnings = dry.stderr.split(separator: "\n").filter { $0.hasPrefix("warning:") }
        #expect(warnings.count == 1 && warnings[0].contains("(\(library)) FAILED `medley adapter check` in this build"), "\(dry.output)")
        #expect(warnings.first?.contains("first failure: ") == true, "\(dry.output)")

        let (reference, referenceEnvironment) = try Self.setUp(Self.job(adapter: "reference", extra: "require_checked: true"))
        let exempt = try TestSupport.medley(["train", reference, "--dry-run"], environment: referenceEnvironment)
        #expect(exempt.status == 0 && !exempt.output.contains("warning:"), "\(exempt.output)")
    }

    @Test("the built-in job warns once per adapter library (its two sims are one library)")
    func oncePerLibrary() throws {
        let environment = ["MEDLEY_CACHE_DIR": try TestSupport.temporaryDirectory("medley-trust") + "/cache"]
        let dry = try TestSupport.medley(["train", "--dry-run"], environment: environment)
        #expect(dry.status == 0, "\(dry.output)")
        let warnings = dry.stderr.split(separator: "\n").filter { $0.hasPrefix("warning:") }
        #expect(warnings.count == 2, "\(dry.output)")
        #expect(warnings.filter { $0.contains("libmedley-adapter-sim") }.count == 1, "\(dry.output)")
        #expect(warnings.filter { $0.contains("libmedley-adapter-cpu") }.count == 1, "\(dry.output)")
    }

    @Test("medley adapters flags a library whose file name is not its plugin name, and the plugin name finds it")
    func namesDiffer() throws {
        let dir = try TestSupport.temporaryDirectory("medley-names")
        _ = try TestSupport.buildSharedLibrary(
            named: "acme-npu",
            sources: ["adapters/template/template_adapter.c", "adapters/kit/medley_kit.c", "adapters/kernels/medley_ref_kernels.c"],
            into: dir)
        let environment = ["MEDLEY_ADAPTER_PATH": dir, "MEDLEY_CACHE_DIR": dir + "/cache"]
        let listed = try TestSupport.medley(["adapters"], environment: environment)
        #expect(listed.status == 0, "\(listed.output)")
        #expect(listed.stdout.contains(
            "note: libmedley-adapter-acme-npu.so reports the plugin name 'template', not 'acme-npu': it is found by its file name 'acme-npu', or by its plugin name 'template'"),
            "\(listed.output)")
        #expect(!listed.stdout.contains("note: libmedley-adapter-cpu"), "\(listed.output)")
        let check = try TestSupport.medley(["adapter", "check", "template"], environment: environment)
        #expect(check.status == 0 && check.stdout.contains("adapter template: PASS"), "\(check.output)")
        let (job, _) = try AdapterTrustTests.setUp(Self.job(adapter: "template"))
        let byPlugin = try TestSupport.medley(["train", job, "--dry-run"], environment: environment)
        #expect(byPlugin.status == 0 && !byPlugin.output.contains("warning:"), "checked by plugin name, found by it: \(byPlugin.output)")
        #expect(byPlugin.stdout.contains("rank 0 (template template-device)"), "\(byPlugin.output)")
    }
}
