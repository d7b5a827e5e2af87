import Foundation
import MedleyCore
import Testing

@Suite struct JobSpecTests {
    @Test func theDefaultJobIsThreeMixedChips() throws {
        let job = JobSpec.defaultJob
        #expect(job.name == "mixed-default")
        #expect(job.model == JobSpec.Model(layers: 2, dim: 64, heads: 4, seq: 64, globalBatch: 14, vocab: 256))
        #expect(job.data == JobSpec.DataSource(path: "/usr/share/games/fortunes", validationFraction: 0.1, seed: 1))
        #expect(job.train.steps == 50)
        #expect(job.train.lrSchedule == .cosine)
        #expect(job.rankCount == 3)
        let ranks = job.rankDevices
        #expect(ranks.map(\.adapter) == ["cpu", "sim", "sim"])
        #expect(ranks.map(\.rank) == [0, 1, 2])
        #expect(ranks[1].options["vendor"] == "Acme" && ranks[1].options["speed"] == "0.5")
        #expect(ranks[2].options["vendor"] == "Borealis" && ranks[2].options["speed"] == "0.25")
        #expect(ranks[1].options["kernels"] == "cpu" && ranks[2].options["kernels"] == "cpu")
        #expect(ranks[0].options.isEmpty)
    }

    @Test func trainingExtrasAndPinnedCPUsAreRead() throws {
        let job = try JobSpec.parse(yaml: """
            model: {batch: 8}
            train: {eval_batches: 2, step_timeout: 30.5, shares: [5, 0, 3]}
            devices:
              - {adapter: cpu, cpus: [0, 1]}
              - {adapter: sim, cpus: 1, count: 2}
            """)
        #expect(job.train.evalBatches == 2 && job.train.stepTimeout == 30.5 && job.train.shares == [5, 0, 3])
        #expect(job.rankDevices.map(\.cpus) == [[0, 1], [1], [1]])
        #expect(try JobSpec.parse(yaml: try job.yamlString()) == job)
        let plain = try JobSpec.parse(yaml: "devices: [cpu]")
        #expect(plain.train.evalBatches == 4 && plain.train.stepTimeout == 600 && plain.train.shares == nil)
        #expect(plain.devices[0].cpus.isEmpty)
    }

    @Test func pinnedSharesAndCPUsAreChecked() {
        let three = "\ndevices: [cpu, cpu, cpu]"
        expectRejected("model: {batch: 6}\ntrain: {shares: [3, 3]}" + three, "train.shares: 2 shares for 3 ranks")
        expectRejected("model: {batch: 6}\ntrain: {shares: [3, 3, 1]}" + three, "train.shares: the shares sum to 7", "is 6")
        expectRejected("model: {batch: 6}\ntrain: {shares: [7, -1, 0]}" + three, "train.shares: a share is -1")
        expectRejected("train: {shares: [a]}" + three, "train.shares: expected a list of whole numbers")
        expectRejected("train: {eval_batches: 0}", "train.eval_batches")
        expectRejected("train: {step_timeout: 0}", "train.step_timeout: must be a number of seconds above 0")
        expectRejected("devices:\n  - {adapter: cpu, cpus: [-1]}\n", "devices[0].cpus: CPU numbers start at 0")
    }

    @Test func everyFieldIsRead() throws {
        let job = try JobSpec.parse(yaml: """
            name: big
            model: {layers: 6, dim: 384, heads: 6, seq: 256, batch: 48, vocab: 256}
            data: {path: /tmp/corpus.txt, validation_fraction: 0.05, seed: 18446744073709551615}
            train:
              steps: 2000
              lr: 6e-4
              lr_schedule: constant
              warmup_steps: 100
              min_lr: 0.00006
              weight_decay: 0.05
              grad_clip: 0
              eval_every: 200
              rebalance_every: 0
              seed: 9
              pipeline_slack: 2
            devices:
              - adapter: ./build/libmedley-adapter-sim.so
                options: {speed: 1, memory: 2GiB, precision: bf16, flag: true}
                count: 2
              - cpu
            """)
        #expect(job.name == "big")
        #expect(job.model == JobSpec.Model(layers: 6, dim: 384, heads: 6, seq: 256, globalBatch: 48))
        #expect(job.data.path == "/tmp/corpus.txt")
        #expect(job.data.validationFraction == 0.05)
        #expect(job.data.seed == UInt64.max)
        #expect(
            job.train
                == JobSpec.Training(
                    steps: 2000, lr: 6e-4, lrSchedule: .constant, warmupSteps: 100, minLR: 0.00006, weightDecay: 0.05,
                    gradClip: 0, evalEvery: 200, rebalanceEvery: 0, seed: 9, pipelineSlack: 2))
        #expect(job.devices.count == 2)
        #expect(job.devices[0].options == ["speed": "1", "memory": "2GiB", "precision": "bf16", "flag": "true"])
        #expect(job.devices[1] == JobSpec.Device(adapter: "cpu"))
        #expect(job.rankCount == 3)
        #expect(job.rankDevices.map(\.instance) == [0, 1, 0])
        #expect(job.rankDevices.map(\.entry) == [0, 0, 1])
    }

    @Test func omittedFieldsTakeTheirDefaults() throws {
        let job = try JobSpec.parse(yaml: "devices:\n  - adapter: cpu\ntrain:\n  lr: 0.01\n")
        #expect(job.name == "medley-job")
        #expect(job.model == JobSpec.Model())
        #expect(job.data == JobSpec.DataSource())
        #expect(job.train.lr == 0.01)
        #expect(job.train.minLR == 0.001)  // lr / 10
        #expect(job.train.steps == 100)
        #expect(job.train.rebalanceEvery == 10)
        #expect(job.train.evalEvery == 0)
        #expect(job.train.pipelineSlack == 1)
        #expect(job.devices == [JobSpec.Device(adapter: "cpu", options: [:], count: 1)])
        #expect(JobSpec.Training.adamBeta1 == 0.9 && JobSpec.Training.adamBeta2 == 0.95 && JobSpec.Training.adamEpsilon == 1e-8)
    }

    @Test func yamlRoundTrips() throws {
        let job = JobSpec.defaultJob
        let text = try job.yamlString()
        #expect(try JobSpec.parse(yaml: text) == job)
    }

    @Test func requireCheckedIsReadCheckedAndRoundTrips() throws {
        #expect(JobSpec.defaultJob.requireChecked == false)
        let job = try JobSpec.parse(yaml: "require_checked: true\ndevices: [cpu]\n")
        #expect(job.requireChecked)
        #expect(try JobSpec.parse(yaml: try job.yamlString()) == job)
        #expect(try job.yamlString().contains("require_checked: true"))
        expectRejected("require_checked: yes", "require_checked: expected true or false, got 'yes'")
        expectRejected("require_checked: [true]", "require_checked: expected true or false, got a list")
        expectRejected("require_check: true", "require_check: unknown key", "did you mean require_checked?")
    }

    @Test func superviseIsReadCheckedAndRoundTrips() throws {
        #expect(JobSpec.defaultJob.supervise == JobSpec.Supervise())
        let job = try JobSpec.parse(yaml: """
            supervise:
              heartbeat_timeout: 3.5
              straggler_factor: 1.5
              straggler_steps: 2
              hello_timeout: 30
              alert_command: "cat >> /tmp/alerts"
              alert_timeout: 2
              metrics_port: 9400
            devices: [cpu]
            """)
        #expect(job.supervise == JobSpec.Supervise(heartbeatTimeout: 3.5, stragglerFactor: 1.5, stragglerSteps: 2, helloTimeout: 30,
                                                   alertCommand: "cat >> /tmp/alerts", alertTimeout: 2, metricsPort: 9400))
        #expect(try JobSpec.parse(yaml: try job.yamlString()) == job)
        expectRejected("supervise: {heartbeat_timout: 3}", "supervise.heartbeat_timout: unknown key", "did you mean heartbeat_timeout?")
        expectRejected("supervise: {heartbeat_timeout: 0}", "supervise.heartbeat_timeout", "above 0")
        expectRejected("supervise: {straggler_factor: 1}", "supervise.straggler_factor", "above 1")
        expectRejected("supervise: {straggler_steps: 0}", "supervise.straggler_steps", "at least 1")
        expectRejected("supervise: {metrics_port: 70000}", "supervise.metrics_port", "0 for none")
        expectRejected("supervise: {alert_command: '  '}", "supervise.alert_command", "a shell command")
        expectRejected("supervise: {alert_timeout: 0}", "supervise.alert_timeout", "at most 600")
        expectRejected("supervise: {hello_timeout: fast}", "supervise.hello_timeout", "a number")
        expectRejected("supervise: [1]", "supervise: expected a mapping")
    }

    @Test func loadReadsAFileAndNamesItInErrors() throws {
        let dir = try makeTemporaryDirectory()
        try write(JobSpec.defaultJobYAML, to: dir + "/job.yaml")
        #expect(try JobSpec.load(path: dir + "/job.yaml") == JobSpec.defaultJob)
        try write("devices: []\n", to: dir + "/bad.yaml")
        expectMedleyError(.invalidArgument, dir + "/bad.yaml: devices:", "no devices") {
            _ = try JobSpec.load(path: dir + "/bad.yaml")
        }
        expectMedleyError(.notFound, dir + "/missing.yaml", "does not exist") { _ = try JobSpec.load(path: dir + "/missing.yaml") }
    }

    /// Expects `yaml` (with a cpu device added unless it has devices) to be rejected with every fragment.
    func expectRejected(
        _ yaml: String, _ fragments: String..., addDevices: Bool = true, sourceLocation: SourceLocation = #_sourceLocation
    ) {
        let text = yaml.contains("devices") || !addDevices ? yaml : yaml + "\ndevices: [cpu]\n"
        do {
            _ = try JobSpec.parse(yaml: text)
            Issue.record("accepted: \(text)", sourceLocation: sourceLocation)
        } catch let error as MedleyError {
            #expect(error.code == .invalidArgument, sourceLocation: sourceLocation)
            #expect(!error.message.contains("\n"), "not one line: \(error.message)", sourceLocation: sourceLocation)
            for fragment in fragments {
                #expect(error.message.contains(fragment), "'\(error.message)' lacks '\(fragment)'", sourceLocation: sourceLocation)
            }
        } catch {
            Issue.record("not a MedleyError: \(error)", sourceLocation: sourceLocation)
        }
    }

    @Test func unknownKeysAreRejectedWithASuggestion() {
        expectRejected("modle: {layers: 2}", "modle: unknown key", "did you mean model?")
        expectRejected("train: {learning_rat: 0.1}", "train.learning_rat: unknown key", "line 1")
        expectRejected("train: {schedule: cosine}", "train.schedule", "did you mean lr_schedule?")
        expectRejected("train: {warmup: 3}", "did you mean warmup_steps?")
        expectRejected("model: {hidden: 3}", "model.hidden: unknown key", "known keys: layers, dim, heads, seq, batch, vocab")
        expectRejected("devices:\n  - adapter: cpu\n    cuont: 2\n", "devices[0].cuont: unknown key", "did you mean count?", "line 3")
        expectRejected("model: {layers: 2, layers: 3}", "model.layers: given twice")
    }

    @Test func wrongTypesNameTheField() {
        expectRejected("model: {layers: two}", "model.layers: expected a whole number, got 'two'")
        expectRejected("model: {dim: 64.5}", "model.dim: expected a whole number")
        expectRejected("train: {lr: fast}", "train.lr: expected a number, got 'fast'")
        expectRejected("data: {seed: -1}", "data.seed: expected a whole number")
        expectRejected("model: [1, 2]", "model: expected a mapping")
        expectRejected("devices: cpu", "devices: expected a list")
        expectRejected("devices:\n  - adapter: [a, b]\n", "devices[0].adapter: expected a name or path, got a list")
        expectRejected("devices:\n  - options: {speed: 1}\n", "devices[0].adapter: missing")
        expectRejected("devices:\n  - adapter: sim\n    options: {speed: [1]}\n", "devices[0].options.speed: expected a single value")
        expectRejected("devices:\n  - adapter: sim\n    options: [speed]\n", "devices[0].options: expected a mapping")
        expectRejected("name: [x]", "name: expected a single value")
    }

    @Test func invalidValuesSayWhatToDo() {
        expectRejected("model: {layers: 0}", "model.layers: must be a whole number greater than 0, got 0")
        expectRejected("model: {dim: -64}", "model.dim: must be")
        expectRejected("model: {seq: 0}", "model.seq")
        expectRejected("model: {batch: 0}", "model.batch")
        expectRejected("model: {heads: 5, dim: 64}", "model.heads: 5 heads do not divide model.dim 64", "8, 16")
        expectRejected("model: {vocab: 512}", "model.vocab: must be 256")
        expectRejected("train: {lr_schedule: linear}", "train.lr_schedule: unknown schedule 'linear'", "constant or cosine")
        expectRejected("train: {lr_schedule: cosin}", "did you mean cosine?")
        expectRejected("train: {lr: 0}", "train.lr: must be a number greater than 0")
        expectRejected("train: {steps: 0}", "train.steps")
        expectRejected("train: {steps: 10, warmup_steps: 11}", "train.warmup_steps: 11 is more than train.steps 10")
        expectRejected("train: {warmup_steps: -1}", "train.warmup_steps: must be 0 or more")
        expectRejected("train: {lr: 0.001, min_lr: 0.01}", "train.min_lr: must be between 0 and train.lr")
        expectRejected("train: {weight_decay: -0.1}", "train.weight_decay")
        expectRejected("train: {grad_clip: -1}", "train.grad_clip")
        expectRejected("train: {eval_every: -1}", "train.eval_every")
        expectRejected("train: {rebalance_every: -5}", "train.rebalance_every: must be 0 or more (0 = never)")
        expectRejected("train: {pipeline_slack: -1}", "train.pipeline_slack: must be 0 (textbook 1F1B) to 16", "got -1")
        expectRejected("train: {pipeline_slack: 17}", "train.pipeline_slack: must be 0 (textbook 1F1B) to 16", "got 17")
        expectRejected("train: {eval_every: 10}\ndata: {validation_fraction: 0}", "train.eval_every: evaluation needs validation data")
        expectRejected("data: {validation_fraction: 1}", "data.validation_fraction: must be at least 0 and below 1")
        expectRejected("data: {path: ''}", "data.path: must not be empty")
        expectRejected("name: ''", "name: must not be empty")
    }

    @Test func devicesAndBatchAreChecked() {
        expectRejected("devices: []", "devices: the job has no devices")
        expectRejected("devices:", "devices: the job has no devices")
        expectRejected("devices:\n  - adapter: cpu\n    count: 0\n", "devices[0].count: must be at least 1, got 0")
        expectRejected("devices:\n  - adapter: ''\n", "devices[0].adapter: must name an adapter")
        expectRejected(
            "model: {batch: 2}\ndevices:\n  - cpu\n  - adapter: sim\n    count: 2\n",
            "model.batch: the global batch of 2 sequences is smaller than the 3 ranks", "at least 3")
    }

    @Test func brokenOrEmptyYAMLIsOneLine() {
        expectRejected("devices: [cpu\n", "not valid YAML", "line 2")
        expectRejected("", "the spec is empty", addDevices: false)
        expectRejected("# only a comment\n", "the spec is empty", addDevices: false)
        expectRejected("just a string\ndevices: x", "not valid YAML", "line 2")
        expectRejected("- a\n- b\n", "expected a mapping of name, model, data, train, devices", addDevices: false)
        expectRejected("model:\n  layers: 2\n dim: 3\n", "not valid YAML", addDevices: false)
    }
}

@Suite struct LearningRateScheduleTests {
    @Test func constantWithAndWithoutWarmup() {
        let flat = LearningRateSchedule(kind: .constant, peak: 0.1, totalSteps: 10)
        #expect((0..<20).map(flat.rate(atStep:)).allSatisfy { $0 == 0.1 })
        let warm = LearningRateSchedule(kind: .constant, peak: 0.1, warmupSteps: 4, totalSteps: 10)
        #expect(warm.rate(atStep: 0) == 0.025)
        #expect(warm.rate(atStep: 1) == 0.05)
        #expect(warm.rate(atStep: 3) == 0.1)
        #expect(warm.rate(atStep: 9) == 0.1)
    }

    @Test func cosineWarmsUpThenFallsToTheMinimum() {
        let schedule = LearningRateSchedule(kind: .cosine, peak: 1.0, minimum: 0.1, warmupSteps: 10, totalSteps: 110)
        #expect(abs(schedule.rate(atStep: 4) - 0.5) < 1e-12)
        #expect(schedule.rate(atStep: 10) == 1.0)
        #expect(abs(schedule.rate(atStep: 60) - 0.55) < 1e-12)  // halfway: the mean of peak and minimum
        #expect(abs(schedule.rate(atStep: 110) - 0.1) < 1e-12)
        #expect(abs(schedule.rate(atStep: 500) - 0.1) < 1e-12)
        let rates = (10...110).map(schedule.rate(atStep:))
        #expect(zip(rates, rates.dropFirst()).allSatisfy { $0 >= $1 })
    }

    @Test func theJobBuildsItsSchedule() throws {
        let job = JobSpec.defaultJob
        let schedule = job.learningRateSchedule
        #expect(schedule == LearningRateSchedule(kind: .cosine, peak: 0.001, minimum: 0.0001, warmupSteps: 5, totalSteps: 50))
        #expect(abs(schedule.rate(atStep: 0) - 0.0002) < 1e-15)
    }
}
