/// Medley's own version, reported by `medley --version` and compared across the hosts of a job.
public enum MedleyVersion {
    public static let string = "0.20.0"
}
