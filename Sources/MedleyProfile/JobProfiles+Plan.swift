import MedleyPlanner

extension JobProfiles {
    /// The planner's plan for these profiles and a global batch of `globalBatch` sequences.
    ///
    /// What `medley plan` prints, and what `plan: auto` trains with:
    ///
    /// ```swift
    /// TrainLauncher(spec: spec, automaticPlanner: { spec in
    ///     try JobProfiles.load(spec: spec).plan(
    ///         globalBatch: spec.model.globalBatch, options: Planner.Options(slack: spec.train.pipelineSlack))
    /// })
    /// ```
    ///
    /// Throws the planner's one-line error when the model cannot fit the chips.
    public func plan(globalBatch: Int, options: Planner.Options = Planner.Options()) throws -> Plan {
        try Planner(model: model, inventory: inventory, network: network, globalBatch: globalBatch, options: options).plan()
    }
}
