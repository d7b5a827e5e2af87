// swift-tools-version: 6.0
import PackageDescription

/// Flags for every adapter library: export only the entry symbol.
let adapterCSettings: [CSetting] = [
    .headerSearchPath("../include"),
    .unsafeFlags(["-fvisibility=hidden", "-O2", "-std=gnu11"]),
]

let package = Package(
    name: "Medley",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "medley", targets: ["medley"]),
        .library(name: "MedleyAdapters", targets: ["MedleyAdapters"]),
        .library(name: "MedleyComm", targets: ["MedleyComm"]),
        .library(name: "MedleyControl", targets: ["MedleyControl"]),
        // Multi-rank scenarios for MedleyComm's tests, run under mpirun.
        .executable(name: "medley-comm-check", targets: ["MedleyCommCheck"]),
        .library(name: "MedleyModel", targets: ["MedleyModel"]),
        .library(name: "MedleyPlanner", targets: ["MedleyPlanner"]),
        .library(name: "MedleyProfile", targets: ["MedleyProfile"]),
        .library(name: "MedleyTrain", targets: ["MedleyTrain"]),
        // Chip adapters: shared libraries behind the C ABI in adapters/include/medley_adapter.h.
        .library(name: "medley-adapter-reference", type: .dynamic, targets: ["MedleyAdapterReference"]),
        .library(name: "medley-adapter-sim", type: .dynamic, targets: ["MedleyAdapterSim"]),
        .library(name: "medley-adapter-cpu", type: .dynamic, targets: ["MedleyAdapterCPU"]),
        .library(name: "medley-adapter-opencl", type: .dynamic, targets: ["MedleyAdapterOpenCL"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        // MARK: C side of the adapter ABI

        /// Helpers shared by Medley's host-memory adapters: errors, buffers, op checking.
        .target(
            name: "MedleyAdapterKit",
            path: "adapters/kit",
            cSettings: adapterCSettings
        ),
        /// Portable C99 kernels of opset v1: the numerical oracle.
        .target(
            name: "MedleyReferenceKernels",
            dependencies: ["MedleyAdapterKit"],
            path: "adapters/kernels",
            cSettings: adapterCSettings
        ),
        /// The reference adapter: the reference kernels behind the ABI.
        .target(
            name: "MedleyAdapterReference",
            dependencies: ["MedleyAdapterKit", "MedleyReferenceKernels"],
            path: "adapters/reference",
            cSettings: adapterCSettings
        ),
        /// The cpu kernels of opset v1: every matmul an OpenBLAS sgemm, vectorized loops for the rest.
        /// Linked into the cpu adapter and the sim adapter (its `kernels=cpu`); every symbol is hidden.
        /// cblas.h comes from Debian's libopenblas-dev (default include path, see scripts/setup.sh).
        .target(
            name: "MedleyCPUKernels",
            dependencies: ["MedleyAdapterKit"],
            path: "adapters/cpu-kernels",
            cSettings: adapterCSettings + [.unsafeFlags(["-O3", "-fno-math-errno"])],
            linkerSettings: [.linkedLibrary("openblas")]
        ),
        /// The sim adapter: a simulated vendor chip (speed, memory, precision, faults) on the reference
        /// kernels, or on the cpu kernels with the option `kernels=cpu`.
        .target(
            name: "MedleyAdapterSim",
            dependencies: ["MedleyAdapterKit", "MedleyReferenceKernels", "MedleyCPUKernels"],
            path: "adapters/sim",
            cSettings: adapterCSettings
        ),
        /// The cpu adapter: the cpu kernels behind the ABI (devices, options, OpenBLAS threads).
        .target(
            name: "MedleyAdapterCPU",
            dependencies: ["MedleyAdapterKit", "MedleyCPUKernels"],
            path: "adapters/cpu",
            cSettings: adapterCSettings + [.unsafeFlags(["-O3", "-fno-math-errno"])],
            linkerSettings: [.linkedLibrary("openblas")]
        ),

        /// The OpenCL ICD loader and headers, found through pkg-config (Debian's ocl-icd-opencl-dev
        /// and opencl-c-headers; scripts/setup.sh installs them with PoCL, a CPU OpenCL driver).
        .systemLibrary(
            name: "COpenCL",
            path: "Sources/COpenCL",
            pkgConfig: "OpenCL",
            providers: [.apt(["ocl-icd-opencl-dev", "opencl-c-headers", "pocl-opencl-icd"])]
        ),
        /// The opencl adapter: opset v1 as OpenCL C kernels on any OpenCL device (PoCL on this host's
        /// CPU, or a vendor's GPU), cl_mem buffers in device memory, one in-order queue per stream.
        /// The kernel source (kernels/opencl_kernels.cl) is compiled in through opencl_kernels_source.h,
        /// which kernels/generate.sh regenerates.
        .target(
            name: "MedleyAdapterOpenCL",
            dependencies: ["MedleyAdapterKit", "COpenCL"],
            path: "adapters/opencl",
            exclude: ["kernels", "README.md"],
            cSettings: adapterCSettings,
            linkerSettings: [.linkedLibrary("OpenCL")]
        ),

        // MARK: Host

        /// The ABI header and its entry list, as the Swift host sees them.
        .target(
            name: "CMedleyAdapter",
            path: "Sources/CMedleyAdapter"
        ),
        /// Shared value types and errors (no MPI, no dlopen).
        .target(
            name: "MedleyCore",
            dependencies: [
                .product(name: "Yams", package: "Yams"),
            ],
            path: "Sources/MedleyCore"
        ),
        /// Loads adapters, wraps devices/buffers/ops in Swift, checks conformance.
        .target(
            name: "MedleyAdapters",
            dependencies: ["CMedleyAdapter", "MedleyCore"],
            path: "Sources/MedleyAdapters"
        ),
        /// Open MPI as a system library, with C getters for its handle macros.
        .systemLibrary(
            name: "CMPI",
            path: "Sources/CMPI",
            pkgConfig: "ompi-c",
            providers: [.apt(["libopenmpi-dev", "openmpi-bin", "pkg-config"])]
        ),
        /// protoc-c output for protos/medley.proto (committed; scripts/gen-protos.sh regenerates).
        .target(
            name: "CMedleyProto",
            path: "Sources/CMedleyProto",
            linkerSettings: [.linkedLibrary("protobuf-c")]
        ),
        /// MPI communicator, framed messages, gradient exchange, mpirun launcher.
        .target(
            name: "MedleyComm",
            dependencies: ["CMPI", "CMedleyProto", "MedleyCore"],
            path: "Sources/MedleyComm"
        ),
        /// The control channel between a job's ranks and its supervisor: messages, frames with the
        /// job's token, and the rank's side (a client that never stalls training).
        .target(
            name: "MedleyControl",
            dependencies: ["CMedleyProto", "MedleyCore"],
            path: "Sources/MedleyControl"
        ),
        /// The supervisor as a pure state machine: events in, directives out, an injected clock.
        .target(
            name: "MedleySupervisor",
            dependencies: ["MedleyControl", "MedleyCore"],
            path: "Sources/MedleySupervisor"
        ),
        /// `medley launch`: the supervisor's shell (the control channel's TCP listener on SwiftNIO,
        /// the timer, the run directory, alerts, the summary) around the pure state machine.
        .target(
            name: "MedleyLaunch",
            dependencies: [
                "MedleyControl", "MedleyCore", "MedleyPlanner", "MedleySupervisor", "MedleyTrain",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            path: "Sources/MedleyLaunch"
        ),
        /// Multi-rank test scenarios for MedleyComm (run under mpirun by MedleyCommTests).
        .executableTarget(
            name: "MedleyCommCheck",
            dependencies: ["MedleyBench", "MedleyComm", "MedleyCore"],
            path: "Sources/medley-comm-check"
        ),
        /// The GPT model built from opset ops on one device.
        .target(
            name: "MedleyModel",
            dependencies: ["MedleyAdapters", "MedleyCore"],
            path: "Sources/MedleyModel"
        ),
        /// The planner: pure Swift (no MPI, no devices): profiles + model cost + inventory → a Plan.
        .target(
            name: "MedleyPlanner",
            dependencies: ["MedleyCore"],
            path: "Sources/MedleyPlanner"
        ),
        /// Profiles: each chip type's layer times, optimizer cost and memory, and the link between
        /// ranks (MPI ping-pong), measured and cached on disk; the planner's inputs for a job.
        .target(
            name: "MedleyProfile",
            dependencies: ["CMedleyProto", "MedleyAdapters", "MedleyComm", "MedleyCore", "MedleyModel", "MedleyPlanner"],
            path: "Sources/MedleyProfile"
        ),
        /// The training workers (one rank per chip) and the session they share, the mpirun launcher
        /// around them, shares and step records.
        .target(
            name: "MedleyTrain",
            dependencies: ["CMedleyProto", "MedleyAdapters", "MedleyComm", "MedleyControl", "MedleyCore", "MedleyModel", "MedleyPlanner"],
            path: "Sources/MedleyTrain"
        ),
        /// OpenBLAS as the host links it: the plain-sgemm baseline of `medley adapter bench` and the
        /// host benchmark's work. Only MedleyBench links it.
        .systemLibrary(
            name: "COpenBLAS",
            path: "Sources/COpenBLAS",
            pkgConfig: "openblas"
        ),
        /// Every benchmark: adapter ops and model steps, the weighted allreduce, training jobs
        /// (mixed, straggler, bubble, prediction), the host's neighbour effect, and the planner's scaling.
        .target(
            name: "MedleyBench",
            dependencies: [
                "COpenBLAS", "MedleyAdapters", "MedleyComm", "MedleyControl", "MedleyCore", "MedleyLaunch", "MedleyModel", "MedleyPlanner",
                "MedleySupervisor", "MedleyTrain",
            ],
            path: "Sources/MedleyBench"
        ),
        /// The command-line tool: argument parsing only.
        .executableTarget(
            name: "medley",
            dependencies: [
                "MedleyAdapters",
                "MedleyBench",
                "MedleyComm",
                "MedleyControl",
                "MedleyCore",
                "MedleyLaunch",
                "MedleyModel",
                "MedleyPlanner",
                "MedleyProfile",
                "MedleyTrain",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Sources/medley"
        ),

        // MARK: Tests

        .target(
            name: "MedleyTestSupport",
            dependencies: ["MedleyAdapters", "MedleyCore"],
            path: "Tests/MedleyTestSupport"
        ),
        .testTarget(
            name: "MedleyAdaptersTests",
            dependencies: ["MedleyAdapters", "MedleyCore", "MedleyTestSupport"],
            path: "Tests/MedleyAdaptersTests"
        ),
        .testTarget(
            name: "MedleyCommTests",
            dependencies: ["MedleyComm", "MedleyCore", "MedleyCommCheck"],
            path: "Tests/MedleyCommTests"
        ),
        .testTarget(
            name: "MedleyModelTests",
            dependencies: ["MedleyModel", "MedleyAdapters", "MedleyCore", "MedleyTestSupport"],
            path: "Tests/MedleyModelTests"
        ),
        .testTarget(
            name: "MedleyCLITests",
            dependencies: ["MedleyTestSupport"],
            path: "Tests/MedleyCLITests"
        ),
        .testTarget(
            name: "MedleyTrainTests",
            dependencies: ["MedleyTrain", "MedleyCore", "MedleyModel", "MedleyPlanner", "MedleyTestSupport"],
            path: "Tests/MedleyTrainTests"
        ),
        .testTarget(
            name: "MedleyBenchTests",
            dependencies: ["MedleyBench", "MedleyCore", "MedleyTrain", "MedleyTestSupport"],
            path: "Tests/MedleyBenchTests"
        ),
        .testTarget(
            name: "MedleyProfileTests",
            dependencies: ["MedleyProfile", "MedleyComm", "MedleyPlanner", "MedleyCore", "MedleyTestSupport"],
            path: "Tests/MedleyProfileTests"
        ),
        .testTarget(
            name: "MedleyPlannerTests",
            dependencies: ["MedleyPlanner", "MedleyCore"],
            path: "Tests/MedleyPlannerTests"
        ),
        .testTarget(
            name: "MedleyControlTests",
            dependencies: ["MedleyControl", "MedleyCore"],
            path: "Tests/MedleyControlTests"
        ),
        .testTarget(
            name: "MedleySupervisorTests",
            dependencies: ["MedleySupervisor", "MedleyControl", "MedleyCore"],
            path: "Tests/MedleySupervisorTests"
        ),
        .testTarget(
            name: "MedleyLaunchTests",
            dependencies: ["MedleyLaunch", "MedleyControl", "MedleySupervisor", "MedleyCore", "MedleyTrain", "MedleyTestSupport"],
            path: "Tests/MedleyLaunchTests"
        ),
        .testTarget(
            name: "MedleyCoreTests",
            dependencies: ["MedleyCore"],
            path: "Tests/MedleyCoreTests"
        ),
    ]
)
