import Foundation

/// One trainable tensor (a manifest `trainable` entry): its graph name, adapter module, rank slot,
/// `role` (`Contract.roleDown` `[r_max, fan_in]` / `Contract.roleUp` `[out, r_max]`, recorded by
/// the exporter and never read from the name), parameter name inside the module, shape and dtype.
public struct Trainable: Equatable {
    public let name: String
    public let module: String
    public let slot: String
    public let role: String
    public let param: String
    public let shape: [Int]
    public let dtype: String
    public init(name: String, module: String, slot: String, role: String, param: String, shape: [Int], dtype: String) {
        self.name = name
        self.module = module
        self.slot = slot
        self.role = role
        self.param = param
        self.shape = shape
        self.dtype = dtype
    }
    public var numel: Int { shape.reduce(1, *) }
}

public struct FileEntry: Equatable {
    public let path: String
    public let sha256: String
    public let size: Int
}

public struct OptimizerSpec {
    public let name: String
    public let lr: Double
    public let raw: JSONObject
}

/// A parsed, valid `manifest.json` (mobile_peft/core/manifest.py `Manifest`): the sections a phone
/// needs are typed, the rest stay JSON objects. Read a bundle with `validateBundle` (structure,
/// then every file's size and sha256; one `BundleError` naming every problem) or a JSON value
/// with `fromJson`.
public struct Manifest {
    public let format: String
    public let sdkVersion: String
    public let model: JSONObject
    public let inputSpec: BundleInputSpec
    public let methods: JSONObject
    public let trainable: [Trainable]
    public let schedule: RankSchedule
    public let performanceModel: JSONObject?
    public let optimizer: OptimizerSpec
    public let backbone: JSONObject
    public let files: [FileEntry]
    public let raw: JSONObject

    /// The optional `memory_bound` section (`Contract.MemoryBoundKey`); nil in bundles written before it.
    public var memoryBound: JSONObject? { raw[Contract.Key.memoryBound]?.object }

    /// `module::slot` unit key -> role -> tensor, from the recorded roles, in manifest order.
    public func slotPairs() -> OrderedDict<OrderedDict<Trainable>> {
        var out = OrderedDict<OrderedDict<Trainable>>()
        for t in trainable { out[Units.key(t.module, t.slot), default: OrderedDict()][t.role] = t }
        return out
    }

    /// Parse `d`; every problem of `manifestProblems` and of the typed reading in one `BundleError`.
    public static func fromJson(_ d: JSON, source: String = "manifest") throws -> Manifest {
        var problems = manifestProblems(d)
        if !problems.isEmpty { throw BundleError(source, problems) }
        guard let m = ManifestReader(d.object!).read(&problems) else { throw BundleError(source, problems) }
        return m
    }

    /// Read and check a bundle directory: manifest structure, then every file's size and sha256.
    public static func validateBundle(_ bundle: URL) throws -> Manifest {
        let source = bundle.path
        if !Checksums.isDirectory(bundle) {
            throw BundleError(source, ["not a directory (unzip a .zip bundle first, or pass the directory)"])
        }
        let path = bundle.appendingPathComponent(Contract.manifestFile)
        if !Checksums.isFile(path) {
            throw BundleError(source, ["no \(Contract.manifestFile); is this a bundle written by `mobile-peft export`?"])
        }
        let d: JSON
        do {
            d = try Json.parseFile(path)
        } catch let e as JsonError {
            throw BundleError(source, ["\(Contract.manifestFile) is not valid JSON (\(e.message))"])
        }
        guard let o = d.object else { throw BundleError(source, ["\(Contract.manifestFile) holds a \(Py.typeName(d)), not an object"]) }
        var problems = manifestProblems(d)
        problems += try fileProblems(bundle, o[Contract.Key.files])
        if !problems.isEmpty { throw BundleError(source, problems) }
        return try fromJson(d, source: source)
    }

    private static func fileProblems(_ bundle: URL, _ files: JSON?) throws -> [String] {
        var out: [String] = []
        for entry in files?.array ?? [] {
            guard let e = entry.object, Contract.fileKeys.allSatisfy({ e.contains($0) }) else { continue } // already reported
            let name = e[Contract.FileKey.path]
            let rel = Py.str(name)
            // Not checked by the SDK, which writes these paths itself; a phone reads pushed files.
            if rel.hasPrefix("/") || rel.split(separator: "/", omittingEmptySubsequences: false).contains("..") {
                out.append("file \(Py.repr(name)) points outside the bundle; re-export it")
                continue
            }
            let path = bundle.appendingPathComponent(rel)
            if !FileManager.default.fileExists(atPath: path.path) {
                out.append("file \(Py.repr(name)) listed in the manifest is missing")
                continue
            }
            let size = Checksums.sizeOf(path)
            if !Py.equal(.int(size), e[Contract.FileKey.size]) {
                out.append("file \(Py.repr(name)) has \(size) bytes; the manifest says \(Py.str(e[Contract.FileKey.size])) (tampered or truncated)")
            } else if e[Contract.FileKey.sha256] != .string(try Checksums.sha256Of(path)) {
                out.append("file \(Py.repr(name)) fails its sha256 checksum (tampered or corrupted)")
            }
        }
        return out
    }

    /// The file `name` of this bundle directory.
    public static func file(_ bundle: URL, _ name: String) -> URL { bundle.appendingPathComponent(name) }
}

/// Every structural problem of a manifest JSON value, empty when valid; files are not read.
/// Mirrors mobile_peft/core/manifest.py `manifest_problems` check for check and message for message
/// (tests/demo_apps/fixtures/manifest_problems.json holds Python's answers for broken manifests).
public func manifestProblems(_ manifest: JSON?) -> [String] { ManifestChecks.problems(manifest) }
