import CryptoKit
import Foundation

/// A bundle that cannot be used; the message lists every problem found, not only the first.
struct BundleError: Error, CustomStringConvertible {
    let description: String
    init(_ message: String) { description = message }
}

struct FileEntry { let path: String; let sha256: String; let size: Int64 }
struct TrainableEntry { let name: String; let module: String; let slot: String; let shape: [Int64]; let dtype: String }

/// One rank-mask graph input, in the order the graphs take them.
struct MaskSlot {
    let module: String
    let slot: String
    let rMax: Int
    var inputName: String { Contract.maskInputName(module: module, slot: slot) }
}

struct Phase {
    let startStep: Int
    let ranks: [String: [String: Int]]
    /// Optional soft masks (ARD-LoRA); absent slots use the prefix mask of their rank.
    let masks: [String: [String: [Float]]]
}

/// Same rules as `RankSchedule.phase_at` / `RankSchedule.mask` in mobile_peft/allocators/schedule.py.
struct RankSchedule {
    let phases: [Phase]
    let masks: [MaskSlot]

    func phaseIndex(at step: Int) -> Int {
        var current = 0
        for (i, p) in phases.enumerated() where p.startStep <= step { current = i }
        return current
    }

    func maskValues(_ phase: Phase, _ slot: MaskSlot) throws -> [Float] {
        if let soft = phase.masks[slot.module]?[slot.slot] { return soft }
        guard let rank = phase.ranks[slot.module]?[slot.slot] else {
            throw BundleError("phase starting at step \(phase.startStep) has no rank for \(slot.inputName)")
        }
        return (0..<slot.rMax).map { $0 < rank ? 1 : 0 }
    }

    /// The masks of the phase active at `step`, in graph input order.
    func masks(at step: Int) throws -> [(MaskSlot, [Float])] {
        let phase = phases[phaseIndex(at: step)]
        return try masks.map { ($0, try maskValues(phase, $0)) }
    }
}

struct InputSpec {
    let imageSize: Int
    let imageMean: [Float]
    let imageStd: [Float]
    let promptTemplate: String
    let maxTextLen: Int
    let sequenceLength: Int
    let batchSize: Int
    /// {"pad", "bos", "eos", "ignore_index"} as export/bundle.py writes them.
    let tokenIds: [String: Int]
    let tokenizerFile: String
}

struct OptimizerSpec { let name: String; let lr: Double }

/// `manifest.json` of a bundle directory, parsed and checked; `load` collects every problem into
/// one `BundleError`, `verifyFiles` checks each listed file's size and sha256.
struct Manifest {
    let dir: URL
    let format: String
    let inputSpec: InputSpec
    let trainable: [TrainableEntry]
    let schedule: RankSchedule
    let optimizer: OptimizerSpec
    let files: [FileEntry]

    func file(_ name: String) -> URL { dir.appendingPathComponent(name) }

    // Layout of the schedule JSON inside rank_schedule (mobile_peft/allocators/schedule.py, version 1);
    // not in export/contract.py.
    private static let scheduleSlots = "slots"
    private static let scheduleRMax = "r_max"
    private static let phaseStartStep = "start_step"
    private static let phaseRanks = "ranks"
    private static let phaseMasks = "masks"

    static func load(_ dir: URL) throws -> Manifest {
        let url = dir.appendingPathComponent(Contract.manifestFile)
        guard let data = try? Data(contentsOf: url),
              let root = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw BundleError("\(url.path) is missing or not a JSON object; push a bundle made by `mobile-peft export`.")
        }
        var problems = Contract.requiredKeys.filter { root[$0] == nil }.map { "missing key '\($0)'" }
        if root[Contract.keySchema] as? String != Contract.schemaName {
            problems.append("schema is \(root[Contract.keySchema] ?? "nil"); expected '\(Contract.schemaName)'")
        }
        let version = root[Contract.keySchemaVersion] as? Int ?? -1
        if !Contract.supportedSchemaVersions.contains(version) {
            problems.append("schema_version \(version) is not one this app reads (\(Contract.supportedSchemaVersions)); update the app or re-export")
        }
        let format = root[Contract.keyFormat] as? String ?? ""
        if ![Contract.formatPte, Contract.formatOnnx, Contract.formatCoreml].contains(format) {
            problems.append("format '\(format)' is unknown")
        }
        guard problems.isEmpty else { throw BundleError("invalid manifest \(url.path):\n  - " + problems.joined(separator: "\n  - ")) }

        let spec = parseInputSpec(root[Contract.keyInputSpec] as? [String: Any] ?? [:], &problems)
        let trainable = parseTrainable(root[Contract.keyTrainable] as? [[String: Any]] ?? [], &problems)
        // A Core ML bundle (head only) has no rank schedule: JSON null.
        let schedule = (root[Contract.keyRankSchedule] as? [String: Any]).map { parseSchedule($0, &problems) }
            ?? RankSchedule(phases: [Phase(startStep: 0, ranks: [:], masks: [:])], masks: [])
        let opt = root[Contract.keyOptimizer] as? [String: Any] ?? [:]
        let optimizer = OptimizerSpec(name: opt[Contract.optimizerName] as? String ?? "sgd",
                                      lr: (opt[Contract.optimizerLr] as? NSNumber)?.doubleValue ?? .nan)
        if !(optimizer.lr > 0) { problems.append("optimizer.lr must be a positive number") }
        let files = parseFiles(root[Contract.keyFiles], &problems)
        guard problems.isEmpty else { throw BundleError("invalid manifest \(url.path):\n  - " + problems.joined(separator: "\n  - ")) }
        return Manifest(dir: dir, format: format, inputSpec: spec, trainable: trainable, schedule: schedule,
                        optimizer: optimizer, files: files)
    }

    private static func floats(_ v: Any?) -> [Float] { (v as? [NSNumber])?.map { $0.floatValue } ?? [] }

    private static func parseInputSpec(_ o: [String: Any], _ problems: inout [String]) -> InputSpec {
        for key in [Contract.inputSpecImageSize, Contract.inputSpecImageMean, Contract.inputSpecImageStd,
                    Contract.inputSpecPromptTemplate, Contract.inputSpecMaxTextLen, Contract.inputSpecBatchSize] where o[key] == nil {
            problems.append("input_spec has no '\(key)'")
        }
        let spec = InputSpec(
            imageSize: o[Contract.inputSpecImageSize] as? Int ?? 0,
            imageMean: floats(o[Contract.inputSpecImageMean]),
            imageStd: floats(o[Contract.inputSpecImageStd]),
            promptTemplate: o[Contract.inputSpecPromptTemplate] as? String ?? "",
            maxTextLen: o[Contract.inputSpecMaxTextLen] as? Int ?? 0,
            sequenceLength: o[Contract.inputSpecSequenceLength] as? Int ?? 0,
            batchSize: o[Contract.inputSpecBatchSize] as? Int ?? 1,
            tokenIds: o[Contract.inputSpecTokenIds] as? [String: Int] ?? [:],
            tokenizerFile: o[Contract.inputSpecTokenizerFile] as? String ?? Contract.tokenizerFile)
        if spec.imageSize <= 0 { problems.append("input_spec.image_size must be positive") }
        if spec.imageMean.count != 3 || spec.imageStd.count != 3 { problems.append("input_spec image_mean / image_std need 3 values") }
        if !spec.promptTemplate.contains(PreprocessDefaults.questionPlaceholder) { problems.append("input_spec.prompt_template has no '{question}'") }
        if spec.maxTextLen <= 2 { problems.append("input_spec.max_text_len must be > 2") }
        if let ignore = spec.tokenIds["ignore_index"], Int64(ignore) != PreprocessDefaults.ignoreIndex {
            problems.append("input_spec.token_ids.ignore_index is \(ignore); this app labels with \(PreprocessDefaults.ignoreIndex)")
        }
        return spec
    }

    private static func parseTrainable(_ a: [[String: Any]], _ problems: inout [String]) -> [TrainableEntry] {
        a.enumerated().compactMap { i, o in
            guard let name = o[Contract.trainableName] as? String, let shape = o[Contract.trainableShape] as? [NSNumber] else {
                problems.append("trainable[\(i)] has no name or shape")
                return nil
            }
            return TrainableEntry(name: name, module: o[Contract.trainableModule] as? String ?? "",
                                  slot: o[Contract.trainableSlot] as? String ?? "",
                                  shape: shape.map { $0.int64Value }, dtype: o[Contract.trainableDtype] as? String ?? "float32")
        }
    }

    private static func parseSchedule(_ o: [String: Any], _ problems: inout [String]) -> RankSchedule {
        let modules = o[Contract.rankScheduleModules] as? [String: Any] ?? [:]
        func rMax(_ module: String, _ slot: String) -> Int {
            (((modules[module] as? [String: Any])?[scheduleSlots] as? [String: Any])?[slot] as? [String: Any])?[scheduleRMax] as? Int ?? -1
        }
        var masks: [MaskSlot] = []
        guard let list = o[Contract.rankScheduleMasks] as? [Any] else {
            problems.append("rank_schedule has no '\(Contract.rankScheduleMasks)' list (the graphs' mask input order)")
            return RankSchedule(phases: [], masks: [])
        }
        for (i, item) in list.enumerated() {
            // export/bundle.py writes {"module", "slot", "r_max", "input", "applied_as"}; a bare name is accepted too.
            var module = "", slot = "", r = -1
            if let d = item as? [String: Any] {
                module = d[Contract.trainableModule] as? String ?? ""
                slot = d[Contract.trainableSlot] as? String ?? ""
                r = d[scheduleRMax] as? Int ?? rMax(module, slot)
            } else if let name = item as? String {
                let base = name.hasSuffix(Contract.maskSuffix) ? String(name.dropLast(Contract.maskSuffix.count)) : name
                if let dot = base.lastIndex(of: ".") {
                    module = String(base[..<dot]); slot = String(base[base.index(after: dot)...])
                }
                r = rMax(module, slot)
            }
            if r <= 0 { problems.append("rank_schedule.masks[\(i)] (\(module).\(slot)): no r_max") }
            masks.append(MaskSlot(module: module, slot: slot, rMax: r))
        }
        let phases: [Phase] = (o[Contract.rankSchedulePhases] as? [[String: Any]] ?? []).map { p in
            let ranks = (p[phaseRanks] as? [String: [String: Int]]) ?? [:]
            let soft = ((p[phaseMasks] as? [String: [String: [NSNumber]]]) ?? [:]).mapValues { $0.mapValues { $0.map(\.floatValue) } }
            return Phase(startStep: p[phaseStartStep] as? Int ?? -1, ranks: ranks, masks: soft)
        }
        if phases.first?.startStep != 0 { problems.append("rank_schedule needs phases, the first starting at step 0") }
        for (i, p) in phases.enumerated() {
            for m in masks {
                if let v = p.masks[m.module]?[m.slot], v.count != m.rMax {
                    problems.append("phase \(i): mask of \(m.inputName) has \(v.count) values; r_max is \(m.rMax)")
                } else if p.masks[m.module]?[m.slot] == nil && p.ranks[m.module]?[m.slot] == nil {
                    problems.append("phase \(i) gives no rank for \(m.inputName)")
                }
            }
        }
        return RankSchedule(phases: phases, masks: masks)
    }

    private static func parseFiles(_ value: Any?, _ problems: inout [String]) -> [FileEntry] {
        guard let list = value as? [[String: Any]] else {
            problems.append("files must be a list of {path, sha256, size}")
            return []
        }
        return list.map { o in
            let path = o[Contract.filePath] as? String ?? ""
            let sha = o[Contract.fileSha256] as? String ?? ""
            if sha.count != 64 { problems.append("files: '\(path)' has no 64-hex-digit sha256") }
            return FileEntry(path: path, sha256: sha, size: (o[Contract.fileSize] as? NSNumber)?.int64Value ?? -1)
        }
    }

    /// Every listed file exists with the listed size and sha256; throws one error naming all that do not.
    func verifyFiles() throws {
        var problems: [String] = []
        for entry in files {
            if entry.path.hasPrefix("/") || entry.path.split(separator: "/").contains("..") {
                problems.append("\(entry.path): paths must stay inside the bundle"); continue
            }
            let url = file(entry.path)
            guard FileManager.default.fileExists(atPath: url.path) else { problems.append("\(entry.path): missing"); continue }
            let size = Manifest.size(of: url)
            if size != entry.size { problems.append("\(entry.path): \(size) bytes, manifest says \(entry.size)"); continue }
            let actual = try Manifest.sha256(of: url)
            if actual.lowercased() != entry.sha256.lowercased() { problems.append("\(entry.path): sha256 \(actual), manifest says \(entry.sha256)") }
        }
        if !problems.isEmpty { throw BundleError("bundle \(dir.path) failed verification (re-copy it):\n  - " + problems.joined(separator: "\n  - ")) }
    }

    /// Files under a directory entry (an `.mlpackage`), sorted as Python sorts `Path`s: by components.
    static func filesUnder(_ dir: URL) -> [(String, URL)] {
        let base = dir.standardizedFileURL.path
        var out: [(String, URL)] = []
        let e = FileManager.default.enumerator(at: dir, includingPropertiesForKeys: [.isRegularFileKey])
        while let url = e?.nextObject() as? URL {
            guard (try? url.resourceValues(forKeys: [.isRegularFileKey]).isRegularFile) == true else { continue }
            out.append((String(url.standardizedFileURL.path.dropFirst(base.count + 1)), url))
        }
        return out.sorted { a, b in
            let pa = a.0.split(separator: "/").map(String.init), pb = b.0.split(separator: "/").map(String.init)
            for (x, y) in zip(pa, pb) where x != y { return x.unicodeScalars.lexicographicallyPrecedes(y.unicodeScalars) }
            return pa.count < pb.count
        }
    }

    static func isDirectory(_ url: URL) -> Bool {
        var dir: ObjCBool = false
        return FileManager.default.fileExists(atPath: url.path, isDirectory: &dir) && dir.boolValue
    }

    static func size(of url: URL) -> Int64 {
        let files = isDirectory(url) ? filesUnder(url).map(\.1) : [url]
        return files.reduce(0) { $0 + ((try? FileManager.default.attributesOfItem(atPath: $1.path)[.size] as? NSNumber)?.int64Value ?? 0) }
    }

    /// As export/manifest.py `sha256_of`: a file's bytes; for a directory, per file in sorted order its
    /// relative POSIX path, a NUL byte, then its bytes.
    static func sha256(of url: URL) throws -> String {
        var hasher = SHA256()
        let isDir = isDirectory(url)
        for (rel, file) in isDir ? filesUnder(url) : [("", url)] {
            if isDir { hasher.update(data: Data(rel.utf8) + Data([0])) }
            let handle = try FileHandle(forReadingFrom: file)
            defer { try? handle.close() }
            while let chunk = try handle.read(upToCount: 1 << 20), !chunk.isEmpty { hasher.update(data: chunk) }
        }
        return hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }
}
