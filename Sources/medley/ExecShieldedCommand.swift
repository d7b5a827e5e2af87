import ArgumentParser
import Foundation
import MedleyCore

#if canImport(Glibc)
import Glibc
#endif

/// `medley exec-shielded PROGRAM ARGS…`: runs PROGRAM with SIGTERM blocked (the mask survives
/// exec, a handler would not). `medley train` starts mpirun this way inside a Slurm job, so
/// that Slurm's SIGTERM to every process of the step reaches the ranks (which then stop together
/// at a checkpoint) and not mpirun (which would kill them at once).
struct ExecShielded: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "exec-shielded", abstract: "Run a program with SIGTERM blocked (used by medley train under Slurm).",
        shouldDisplay: false)

    @Argument(parsing: .captureForPassthrough, help: "The program and its arguments.")
    var command: [String] = []

    func run() throws {
        guard let program = command.first else {
            throw MedleyError(.invalidArgument, "exec-shielded: name the program to run")
        }
        var blocked = sigset_t()
        sigemptyset(&blocked)
        sigaddset(&blocked, SIGTERM)
        pthread_sigmask(SIG_BLOCK, &blocked, nil)
        var argv: [UnsafeMutablePointer<CChar>?] = command.map { strdup($0) }
        argv.append(nil)
        execvp(program, &argv)
        throw MedleyError(.notFound, "exec-shielded: cannot run \(program): \(String(cString: strerror(errno)))")
    }
}
