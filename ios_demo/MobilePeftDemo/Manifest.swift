import CryptoKit
import Foundation

/// A bundle that cannot be used; the message lists every problem found, not only the first.
struct BundleError: Error, CustomStringConvertible {
    let description: String
    init(_ message: String) { description = message }
}

struct FileEntry { let path: String; let sha256: String; let size: Int64 }

/// One trainable tensor (a manifest `trainable` entry): graph name, adapter module, rank slot, `role`
/// (`Contract.roleDown` `[r_max, fan_in]` or `Contract.roleUp` `[out, r_max]`, recorded by the exporter;
/// never read from the name), parameter name inside the module, shape and dtype.
struct TrainableEntry {
    let name: String
    let module: String
    let slot: String
    let role: String
    let param: String
    let shape: [Int64]
    let dtype: String
}

/// One rank-mask graph input (a `rank_schedule.mask_inputs` entry), in the order the graphs take them.
struct MaskSlot {
    let module: String
    let slot: String
    let rMax: Int
    let inputName: String
}

/// A rank slot of an adapted module (`rank_schedule.modules[module].slots[slot]`).
struct SlotInfo { let rMax: Int; let paramsPerRank: Int64; let scale: Double }

struct Phase {
    let startStep: Int
    let ranks: [String: [String: Int]]
    /// Optional soft masks (ARD-LoRA); absent slots use the prefix mask of their rank.
    let masks: [String: [String: [Float]]]
}

/// Same rules as `RankSchedule.phase_index` / `RankSchedule.mask` in mobile_peft/core/schedule.py;
/// `masks` are the graphs' mask inputs (`rank_schedule.mask_inputs`), in input order.
struct RankSchedule {
    let phases: [Phase]
    let masks: [MaskSlot]
    let modules: [String: [String: SlotInfo]]

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
    /// Lower-case questions and answers before tokenising (`input_spec.lowercase`).
    let lowercase: Bool
    let sequenceLength: Int
    let batchSize: Int
    /// Special-token ids by `Contract.TokenIdKey` (pad, bos, eos, ignore_index), as the exporter wrote them.
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

    /// Required keys of a phase (`masks` is optional); contract.py has no tuple for them.

    /// Reads and checks `manifest.json` in `dir`: every top-level key, every section's required
    /// sub-keys (the contract's `*Keys` lists), the schema, the rank schedule and the trainable
    /// tensors' roles. All problems are collected into one `BundleError`.
    static func load(_ dir: URL) throws -> Manifest {
        let url = dir.appendingPathComponent(Contract.manifestFile)
        guard let data = try? Data(contentsOf: url),
              let root = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw BundleError("\(url.path) is missing or not a JSON object; push a bundle made by `mobile-peft export`.")
        }
        var problems = Contract.requiredKeys.filter { root[$0] == nil }.map { "missing key '\($0)'" }
        if let schema = root[Contract.Key.schema], schema as? String != Contract.schemaName {
            problems.append("\(Contract.Key.schema) is \(schema); expected '\(Contract.schemaName)'")
        }
        let version = root[Contract.Key.schemaVersion] as? Int ?? -1
        if root[Contract.Key.schemaVersion] != nil, !Contract.supportedSchemaVersions.contains(version) {
            problems.append("\(Contract.Key.schemaVersion) \(version) is not one this app reads (\(Contract.supportedSchemaVersions)); update the app or re-export")
        }
        let format = root[Contract.Key.format] as? String ?? ""
        if root[Contract.Key.format] != nil, !Contract.formats.contains(format) {
            problems.append("\(Contract.Key.format) '\(format)' is unknown; expected one of \(Contract.formats)")
        }

        // Sections the app does not read are still checked, so a bad bundle fails here, not later.
        _ = section(root, Contract.Key.model, Contract.modelKeys, &problems)
        _ = section(root, Contract.Key.backbone, Contract.backboneKeys, &problems)
        checkMethods(root, format, &problems)
        let spec = section(root, Contract.Key.inputSpec, Contract.inputSpecKeys, &problems).map { parseInputSpec($0, &problems) }
        let trainable = list(root, Contract.Key.trainable, &problems).map { parseTrainable($0, &problems) } ?? []
        let schedule = section(root, Contract.Key.rankSchedule, Contract.bundleRankScheduleKeys, &problems)
            .map { parseSchedule($0, &problems) }
        if let schedule { checkRoles(trainable, schedule, &problems) }
        let optimizer = section(root, Contract.Key.optimizer, Contract.optimizerKeys, &problems).map {
            OptimizerSpec(name: $0[Contract.OptimizerKey.name] as? String ?? "",
                          lr: ($0[Contract.OptimizerKey.lr] as? NSNumber)?.doubleValue ?? .nan)
        }
        if let optimizer, !(optimizer.lr > 0) {
            problems.append("\(Contract.Key.optimizer).\(Contract.OptimizerKey.lr) must be a positive number")
        }
        let files = list(root, Contract.Key.files, &problems).map { parseFiles($0, &problems) } ?? []
        guard problems.isEmpty, let spec, let schedule, let optimizer else {
            throw BundleError("invalid manifest \(url.path):\n  - " + problems.joined(separator: "\n  - "))
        }
        return Manifest(dir: dir, format: format, inputSpec: spec, trainable: trainable, schedule: schedule,
                        optimizer: optimizer, files: files)
    }

    /// Adds "missing key <where>.<k>" for each of `keys` that `o` lacks; true when none is missing.
    @discardableResult
    private static func requireKeys(_ o: [String: Any], _ keys: [String], _ at: String, _ problems: inout [String]) -> Bool {
        let missing = keys.filter { o[$0] == nil }
        problems += missing.map { "missing key \(at).\($0)" }
        return missing.isEmpty
    }

    /// The object at `key` with its `keys` checked; nil when absent (reported with the top-level keys) or not an object.
    private static func section(_ root: [String: Any], _ key: String, _ keys: [String], _ problems: inout [String]) -> [String: Any]? {
        guard let value = root[key] else { return nil }
        guard let o = value as? [String: Any] else { problems.append("\(key) is not an object"); return nil }
        requireKeys(o, keys, key, &problems)
        return o
    }

    private static func list(_ root: [String: Any], _ key: String, _ problems: inout [String]) -> [Any]? {
        guard let value = root[key] else { return nil }
        guard let a = value as? [Any] else { problems.append("\(key) is not a list"); return nil }
        return a
    }

    /// The entries of `a` that are objects carrying all of `keys`, with their index; the others are reported.
    private static func objects(_ a: [Any], _ keys: [String], _ at: String, _ problems: inout [String]) -> [(Int, [String: Any])] {
        var out: [(Int, [String: Any])] = []
        for (i, item) in a.enumerated() {
            guard let o = item as? [String: Any] else { problems.append("\(at)[\(i)] is not an object"); continue }
            if requireKeys(o, keys, "\(at)[\(i)]", &problems) { out.append((i, o)) }
        }
        return out
    }

    private static func floats(_ v: Any?) -> [Float] { (v as? [NSNumber])?.map { $0.floatValue } ?? [] }

    private static func checkMethods(_ root: [String: Any], _ format: String, _ problems: inout [String]) {
        guard let required = Contract.methodKeys[format],  // unknown format: reported already
              let methods = section(root, Contract.Key.methods, required, &problems),
              format == Contract.formatPte else { return }
        for (key, keys) in [(Contract.MethodKey.train, Contract.pteTrainMethodKeys), (Contract.MethodKey.eval, Contract.pteEvalMethodKeys)] {
            if let m = methods[key] as? [String: Any] { requireKeys(m, keys, "\(Contract.Key.methods).\(key)", &problems) }
        }
    }

    private static func parseInputSpec(_ o: [String: Any], _ problems: inout [String]) -> InputSpec {
        let at = Contract.Key.inputSpec
        let ids = o[Contract.InputSpecKey.tokenIds] as? [String: Int] ?? [:]
        if let t = o[Contract.InputSpecKey.tokenIds] as? [String: Any] {
            requireKeys(t, Contract.tokenIdKeys, "\(at).\(Contract.InputSpecKey.tokenIds)", &problems)
        }
        let spec = InputSpec(
            imageSize: o[Contract.InputSpecKey.imageSize] as? Int ?? 0,
            imageMean: floats(o[Contract.InputSpecKey.imageMean]),
            imageStd: floats(o[Contract.InputSpecKey.imageStd]),
            promptTemplate: o[Contract.InputSpecKey.promptTemplate] as? String ?? "",
            maxTextLen: o[Contract.InputSpecKey.maxTextLen] as? Int ?? 0,
            lowercase: o[Contract.InputSpecKey.lowercase] as? Bool ?? true,
            sequenceLength: o[Contract.InputSpecKey.sequenceLength] as? Int ?? 0,
            batchSize: o[Contract.InputSpecKey.batchSize] as? Int ?? 0,
            tokenIds: ids,
            tokenizerFile: o[Contract.InputSpecKey.tokenizerFile] as? String ?? "")
        if spec.imageSize <= 0 { problems.append("\(at).\(Contract.InputSpecKey.imageSize) must be positive") }
        if spec.imageMean.count != 3 || spec.imageStd.count != 3 {
            problems.append("\(at).\(Contract.InputSpecKey.imageMean) / \(Contract.InputSpecKey.imageStd) need 3 values")
        }
        if !spec.promptTemplate.contains(PreprocessDefaults.questionPlaceholder) {
            problems.append("\(at).\(Contract.InputSpecKey.promptTemplate) has no '\(PreprocessDefaults.questionPlaceholder)'")
        }
        if spec.maxTextLen <= 2 { problems.append("\(at).\(Contract.InputSpecKey.maxTextLen) must be > 2") }
        if spec.batchSize <= 0 { problems.append("\(at).\(Contract.InputSpecKey.batchSize) must be positive") }
        if let ignore = spec.tokenIds[Contract.TokenIdKey.ignoreIndex], ignore != Contract.ignoreIndex {
            problems.append("\(at).\(Contract.InputSpecKey.tokenIds).\(Contract.TokenIdKey.ignoreIndex) is \(ignore); this app labels with \(Contract.ignoreIndex)")
        }
        return spec
    }

    private static func parseTrainable(_ a: [Any], _ problems: inout [String]) -> [TrainableEntry] {
        objects(a, Contract.trainableKeys, Contract.Key.trainable, &problems).map { i, o in
            let role = o[Contract.TrainableKey.role] as? String ?? ""
            if !Contract.roles.contains(role) {
                problems.append("\(Contract.Key.trainable)[\(i)].\(Contract.TrainableKey.role) is '\(role)'; expected one of \(Contract.roles)")
            }
            return TrainableEntry(
                name: o[Contract.TrainableKey.name] as? String ?? "",
                module: o[Contract.TrainableKey.module] as? String ?? "",
                slot: o[Contract.TrainableKey.slot] as? String ?? "",
                role: role,
                param: o[Contract.TrainableKey.param] as? String ?? "",
                shape: (o[Contract.TrainableKey.shape] as? [NSNumber] ?? []).map(\.int64Value),
                dtype: o[Contract.TrainableKey.dtype] as? String ?? "")
        }
    }

    /// Every adapter slot has exactly one down tensor `[r_max, fan_in]` and one up tensor
    /// `[out, r_max]`, told apart by their recorded role, with the slot's r_max.
    private static func checkRoles(_ trainable: [TrainableEntry], _ schedule: RankSchedule, _ problems: inout [String]) {
        let at = Contract.Key.trainable
        var order: [String] = []
        var bySlot: [String: [TrainableEntry]] = [:]
        for t in trainable {
            let key = "\(t.module).\(t.slot)"
            if bySlot[key] == nil { order.append(key) }
            bySlot[key, default: []].append(t)
        }
        for key in order {
            let tensors = bySlot[key]!
            let roles = tensors.map(\.role)
            guard roles.sorted() == Contract.roles.sorted() else {
                problems.append("\(at): \(key) has roles \(roles); expected one '\(Contract.roleDown)' and one '\(Contract.roleUp)'")
                continue
            }
            guard let rMax = schedule.modules[tensors[0].module]?[tensors[0].slot]?.rMax else {
                problems.append("\(at): \(key) is not in \(Contract.Key.rankSchedule).\(Contract.ScheduleKey.modules)")
                continue
            }
            let down = tensors.first(where: { $0.role == Contract.roleDown })!
            let up = tensors.first(where: { $0.role == Contract.roleUp })!
            if down.shape.count != 2 || down.shape[0] != Int64(rMax) {
                problems.append("\(at): \(down.name) (\(Contract.roleDown)) has shape \(down.shape); expected [\(rMax), fan_in]")
            }
            if up.shape.count != 2 || up.shape[1] != Int64(rMax) {
                problems.append("\(at): \(up.name) (\(Contract.roleUp)) has shape \(up.shape); expected [out, \(rMax)]")
            }
        }
    }

    private static func parseSchedule(_ o: [String: Any], _ problems: inout [String]) -> RankSchedule {
        let at = Contract.Key.rankSchedule
        let modulesAt = "\(at).\(Contract.ScheduleKey.modules)"
        var modules: [String: [String: SlotInfo]] = [:]
        let modulesJson = o[Contract.ScheduleKey.modules] as? [String: Any]
        if modulesJson == nil { problems.append("\(modulesAt) is not an object") }
        for (m, value) in (modulesJson ?? [:]).sorted(by: { $0.key < $1.key }) {
            guard let slotsJson = (value as? [String: Any])?[Contract.ScheduleKey.slots] as? [String: Any] else {
                problems.append("\(modulesAt)['\(m)'] has no '\(Contract.ScheduleKey.slots)' object"); continue
            }
            var slots: [String: SlotInfo] = [:]
            for (s, infoValue) in slotsJson.sorted(by: { $0.key < $1.key }) {
                let slotAt = "\(modulesAt)['\(m)'].\(Contract.ScheduleKey.slots)['\(s)']"
                guard let info = infoValue as? [String: Any] else { problems.append("\(slotAt) is not an object"); continue }
                if requireKeys(info, Contract.slotKeys, slotAt, &problems) {
                    slots[s] = SlotInfo(rMax: info[Contract.SlotKey.rMax] as? Int ?? -1,
                                        paramsPerRank: (info[Contract.SlotKey.paramsPerRank] as? NSNumber)?.int64Value ?? -1,
                                        scale: (info[Contract.SlotKey.scale] as? NSNumber)?.doubleValue ?? .nan)
                }
            }
            modules[m] = slots
        }

        let masksAt = "\(at).\(Contract.ScheduleKey.maskInputs)"
        let maskList = o[Contract.ScheduleKey.maskInputs] as? [Any]
        if maskList == nil { problems.append("\(masksAt) is not a list (the graphs' mask inputs, in order)") }
        var masks: [MaskSlot] = []
        for (i, e) in objects(maskList ?? [], Contract.maskInputKeys, masksAt, &problems) {
            let slot = MaskSlot(module: e[Contract.MaskInputKey.module] as? String ?? "",
                                slot: e[Contract.MaskInputKey.slot] as? String ?? "",
                                rMax: e[Contract.MaskInputKey.rMax] as? Int ?? -1,
                                inputName: e[Contract.MaskInputKey.input] as? String ?? "")
            let expected = Contract.maskInputName(module: slot.module, slot: slot.slot)
            if slot.inputName != expected {
                problems.append("\(masksAt)[\(i)].\(Contract.MaskInputKey.input) is '\(slot.inputName)'; expected '\(expected)'")
            }
            if let rMax = modules[slot.module]?[slot.slot]?.rMax {
                if rMax != slot.rMax { problems.append("\(masksAt)[\(i)] (\(slot.inputName)) has \(Contract.MaskInputKey.rMax) \(slot.rMax); the module has \(rMax)") }
            } else {
                problems.append("\(masksAt)[\(i)] names \(slot.module).\(slot.slot), which \(modulesAt) does not have")
            }
            masks.append(slot)
        }

        let phasesAt = "\(at).\(Contract.ScheduleKey.phases)"
        let phaseList = o[Contract.ScheduleKey.phases] as? [Any]
        if phaseList == nil { problems.append("\(phasesAt) is not a list") }
        let phases: [Phase] = objects(phaseList ?? [], Contract.phaseKeys, phasesAt, &problems).map { _, p in
            let ranks = (p[Contract.PhaseKey.ranks] as? [String: [String: Int]]) ?? [:]
            let soft = ((p[Contract.PhaseKey.masks] as? [String: [String: [NSNumber]]]) ?? [:]).mapValues { $0.mapValues { $0.map(\.floatValue) } }
            return Phase(startStep: p[Contract.PhaseKey.startStep] as? Int ?? -1, ranks: ranks, masks: soft)
        }
        if phases.first?.startStep != 0 { problems.append("\(phasesAt): the first phase must start at step 0") }
        for (i, p) in phases.enumerated() {
            for m in masks {
                if let v = p.masks[m.module]?[m.slot], v.count != m.rMax {
                    problems.append("\(phasesAt)[\(i)]: mask of \(m.inputName) has \(v.count) values; r_max is \(m.rMax)")
                } else if p.masks[m.module]?[m.slot] == nil && p.ranks[m.module]?[m.slot] == nil {
                    problems.append("\(phasesAt)[\(i)] gives no rank for \(m.inputName)")
                }
            }
        }
        return RankSchedule(phases: phases, masks: masks, modules: modules)
    }

    private static func parseFiles(_ a: [Any], _ problems: inout [String]) -> [FileEntry] {
        objects(a, Contract.fileKeys, Contract.Key.files, &problems).map { _, o in
            let path = o[Contract.FileKey.path] as? String ?? ""
            let sha = o[Contract.FileKey.sha256] as? String ?? ""
            if sha.count != 64 { problems.append("\(Contract.Key.files): '\(path)' has no 64-hex-digit \(Contract.FileKey.sha256)") }
            return FileEntry(path: path, sha256: sha, size: (o[Contract.FileKey.size] as? NSNumber)?.int64Value ?? -1)
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

    /// As mobile_peft/core/manifest.py `sha256_of`: a file's bytes; for a directory, per file in sorted order its
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
