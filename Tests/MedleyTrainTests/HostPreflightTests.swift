import Foundation
import MedleyCore
import MedleyTrain
import Testing

/// The host preflight's verdicts on what each host said (pure: scripted probes), and the spec's
/// `hosts:` / `network:` fields.
@Suite("host preflight and the spec of a job across hosts")
struct HostPreflightTests {
    static let spec = try! JobSpec.parse(yaml: """
        hosts:
          node1: [cpu, sim]
          node2: [opencl, {adapter: sim, count: 2}]
        network: {interfaces: [eth1, 10.1.0.0/16], rsh_agent: ssh, link_timeout: 20}
        """)

    static func probe(_ rank: Int, adapter: String, version: String = "1.0.0", error: String? = nil,
                      medley: String = HostPreflight.medleyVersion) -> HostPreflight.Probe {
        HostPreflight.Probe(
            rank: rank, hostname: rank < 2 ? "node1" : "node2", error: error, adapter: adapter, adapterVersion: version, abi: "1.0",
            chip: "chip", memoryBytes: 1 << 30, medley: medley)
    }

    @Test("hosts: places each host's chips in order; network: is read; both round-trip through YAML")
    func spec() throws {
        let s = Self.spec
        #expect(s.isMultiHost)
        #expect(s.rankHosts == ["node1", "node1", "node2", "node2", "node2"])
        #expect(s.rankDevices.map(\.adapter) == ["cpu", "sim", "opencl", "sim", "sim"])
        #expect(s.network == JobSpec.Network(interfaces: ["eth1", "10.1.0.0/16"], rshAgent: "ssh", linkTimeout: 20))
        #expect(try JobSpec.parse(yaml: try s.yamlString()) == s)
        #expect(!(try JobSpec.parse(yaml: "devices: [cpu]")).isMultiHost)
    }

    @Test("bad hosts and network values are one line each", arguments: [
        ("hosts: {a: [cpu]}\ndevices: [cpu]", "hosts: and devices: are both given"),
        ("devices: [{adapter: cpu, host: 'node 1'}]", "devices[0].host: 'node 1' is not a host name"),
        ("devices: [{adapter: cpu, host: n1}]\nnetwork: {link_timeout: 0}", "network.link_timeout: must be 1 to 3600"),
        ("devices: [cpu]\nnetwork: {interfaces: ['eth0,eth1']}", "network.interfaces: 'eth0,eth1' is not an interface"),
        ("devices: [cpu]\nnetwork: {speed: 1}", "network.speed"),
    ])
    func badInput(_ yaml: String, _ says: String) {
        do {
            let spec = try JobSpec.parse(yaml: yaml)
            try spec.validate()
            Issue.record("accepted: \(yaml)")
        } catch {
            #expect("\(error)".contains(says), "\(error)")
        }
    }

    @Test("every host that cannot take part is named, with its reason: a chip that does not open, another Medley, another adapter version")
    func problems() {
        let probes = [
            Self.probe(0, adapter: "cpu"), Self.probe(1, adapter: "sim"),
            Self.probe(2, adapter: "opencl", error: "adapter opencl: device_count: no OpenCL platform found"),
            Self.probe(3, adapter: "sim", version: "1.1.0"),
            Self.probe(4, adapter: "sim", medley: "medley 0.1.0 (ABI 1.0, opset 1)"),
        ]
        let found = HostPreflight.problems(probes, spec: Self.spec)
        #expect(found.map(\.rank) == [2, 3, 4])
        #expect(found[0].line == "host node2: devices[2] (opencl, rank 2): adapter opencl: device_count: no OpenCL platform found")
        #expect(found[1].line.contains("host node2: devices[3] (sim, rank 3): adapter sim 1.1.0 (ABI 1.0) differs from sim 1.0.0 (ABI 1.0) on host node1"))
        #expect(found[2].line.contains("host node2: runs medley 0.1.0"))
        #expect(HostPreflight.problems(Array(probes.prefix(2)) + [Self.probe(2, adapter: "opencl")], spec: Self.spec).isEmpty)
    }
}
