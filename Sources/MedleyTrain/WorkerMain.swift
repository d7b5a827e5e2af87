import Foundation
import MedleyComm
import MedleyCore
import MedleyPlanner

/// The body of `medley worker`: one rank of a training job under mpirun.
///
/// Joins MPI, picks the worker the job's plan calls for (``TrainingWorker`` for `plan: data`,
/// ``PipelineWorker`` for a plan file), runs it and classifies a failure: a
/// ``CollectiveFailure`` (or a replica mismatch) was raised by every rank at once, so rank 0
/// reports it and every rank finalizes and exits 1; anything else happened on one rank, which
/// reports it with its rank and aborts the world (the others would wait for it forever).
public enum WorkerMain {
    /// Runs one rank with `options` read from `jobPath` and returns the exit status (0 or 1);
    /// a rank-local failure does not return (MPI_Abort).
    public static func run(jobPath: String, options makeOptions: (JobSpec) throws -> RankSession.Options) throws -> Int32 {
        guard MPIRuntime.isUnderLauncher else {
            throw MedleyError(.invalidArgument, "medley worker runs under mpirun; use `medley train [JOB]` to start a job")
        }
        let spec = try JobSpec.load(path: jobPath)
        let options = try makeOptions(spec)
        try MPIRuntime.initialize(requesting: .funneled)
        SlurmSignal.install()
        let world = try Communicator.world()
        do {
            if spec.plan == JobSpec.dataParallelPlan {
                try TrainingWorker(options: options, communicator: world).run()
            } else {
                try PipelineWorker(options: options, plan: try Plan.load(path: spec.plan), communicator: world).run()
            }
            RankControl.finish()
            try MPIRuntime.finalize()
            return 0
        } catch {
            RankControl.reportFailure(error, rank: world.rank)
            let collective = error is CollectiveFailure || (error as? MedleyError)?.code == .mismatch
            let text = "Error: " + (collective ? "" : "rank \(world.rank): ") + "\(error)"
            if !collective || world.rank == 0 {
                FileHandle.standardError.write(Data((text.replacingOccurrences(of: "\n", with: " ") + "\n").utf8))
            }
            if collective {
                try? MPIRuntime.finalize()
                return 1
            }
            MPIRuntime.abort(exitCode: 1)
        }
    }
}
