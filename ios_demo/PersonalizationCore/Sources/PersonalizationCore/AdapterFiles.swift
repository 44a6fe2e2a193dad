import Foundation

/// An active rank and its alpha (nil for rank 0) of one slot of an effective adapter.
public struct RankAlpha: Equatable {
    public let r: Int
    public let alpha: Double?
}

/// path -> slot -> (active rank, alpha) of an effective adapter.
public typealias ModuleRanks = OrderedDict<OrderedDict<RankAlpha>>

/// The personal adapter on disk, byte for byte as the SDK writes it (mobile_peft/core/adapter_files.py
/// + runtime/adapter.py `write_adapter`): `adapter_config.json` (sorted keys, indent 2) and
/// `adapter_model.safetensors`. LoRA files are Hugging Face PEFT files; Hydra files use the same
/// layout with the SDK's own `peft_type` and parameter names.
///
/// What is written is the *effective* adapter at the final masks: only active ranks (mask != 0),
/// each up-projection column multiplied by its mask value, `r` = active ranks and
/// `alpha = scale * r`; a module whose every rank is masked off is left out. Paths are relative to
/// `language_model` when every LoRA module lives there. Down and up come from the recorded roles.
public enum AdapterFiles {
    public static let configFile = "adapter_config.json"
    public static let weightsFile = "adapter_model.safetensors"
    public static let formatVersion = 1
    public static let keyPrefix = "base_model.model."
    public static let metadataKey = "mobile_peft"
    private static let lmRoot = "language_model"
    // Keys of adapter_config.json / the header that are not manifest keys.
    private static let peftType = "peft_type"
    private static let taskType = "task_type"
    private static let targetModules = "target_modules"
    private static let excludeModules = "exclude_modules"
    private static let rankPattern = "rank_pattern"
    private static let alphaPattern = "alpha_pattern"

    /// PEFT LoraConfig fields this SDK's LoRA cannot honour, with the value that is fine.
    private static let loraFixed: [(String, JSON)] = [
        ("use_dora", .bool(false)), ("use_rslora", .bool(false)), ("bias", .string("none")), ("fan_in_fan_out", .bool(false)),
        ("modules_to_save", .null), ("layers_to_transform", .null), ("target_parameters", .null), ("lora_bias", .bool(false)),
    ]

    public static func tensorKey(_ path: String, _ param: String) -> String { "\(keyPrefix)\(path).\(param).weight" }

    /// Python's `re.escape` (3.7+: only regex metacharacters and whitespace are escaped).
    public static func exactPattern(_ path: String) -> String {
        let special = Set("()[]{}?*+-|^$\\.&~# \t\n\r\u{0B}\u{0C}".unicodeScalars)
        var out = ""
        for c in path.unicodeScalars {
            if special.contains(c) { out += "\\" }
            out.unicodeScalars.append(c)
        }
        return out
    }

    /// The most frequent value; ties go to the first seen (`Counter.most_common(1)`).
    public static func mostCommon<T: Equatable>(_ values: [T]) -> T {
        var counts: [(T, Int)] = []
        for v in values {
            if let i = counts.firstIndex(where: { $0.0 == v }) { counts[i].1 += 1 } else { counts.append((v, 1)) }
        }
        var best = counts[0]
        for c in counts.dropFirst() where c.1 > best.1 { best = c }
        return best.0
    }

    static func loraConfig(_ r: Int, _ alpha: Double, _ targets: [String], _ dropout: Double, _ rankPattern: JSONObject, _ alphaPattern: JSONObject) -> JSONObject {
        var pairs: [(String, JSON)] = [
            (peftType, .string(Contract.peftTypes[Contract.adapterLora]!)), (taskType, .null), ("base_model_name_or_path", .null),
            ("inference_mode", .bool(true)), ("r", .int(r)), ("lora_alpha", .double(alpha)), ("lora_dropout", .double(dropout)),
            (targetModules, JSON(targets)), (excludeModules, .null), (self.rankPattern, .object(rankPattern)),
            (self.alphaPattern, .object(alphaPattern)), ("init_lora_weights", .bool(true)),
        ]
        pairs += loraFixed
        return JSONObject(pairs)
    }

    static func hydraConfig(_ rParallel: Int, _ rSequential: Int, _ alpha: Double, _ targets: [String], _ dropout: Double,
                            _ rankPattern: JSONObject, _ alphaPattern: JSONObject) -> JSONObject {
        let pairs: [(String, JSON)] = [
            (peftType, .string(Contract.peftTypes[Contract.adapterHydra]!)), (taskType, .null), ("r_parallel", .int(rParallel)),
            ("r_sequential", .int(rSequential)), ("alpha", .double(alpha)), (targetModules, JSON(targets)), (excludeModules, .null),
            ("dropout", .double(dropout)), (self.rankPattern, .object(rankPattern)), (self.alphaPattern, .object(alphaPattern)),
            ("init", .string("default")),
        ]
        return JSONObject(pairs)
    }

    private static func optional(_ x: Double?) -> JSON { x.map { .double($0) } ?? .null }

    /// The config that rebuilds exactly `modules`: the most common rank (pair) and alpha are the
    /// defaults, modules that differ get exact-path `rank_pattern` / `alpha_pattern` entries.
    public static func effectiveConfig(_ method: String, _ modules: ModuleRanks, _ dropout: Double) throws -> JSONObject {
        let lora = Contract.slots[Contract.adapterLora]![0]
        let parallel = Contract.slots[Contract.adapterHydra]![0]
        let sequential = Contract.slots[Contract.adapterHydra]![1]
        switch method {
        case Contract.adapterLora:
            let pairs = modules.mapValues { $0[lora]! }
            let common = mostCommon(pairs.values)
            var ranks = JSONObject()
            var alphas = JSONObject()
            for (p, v) in pairs where v.r != common.r { ranks[exactPattern(p)] = .int(v.r) }
            for (p, v) in pairs where v.alpha != common.alpha { alphas[exactPattern(p)] = optional(v.alpha) }
            return loraConfig(common.r, common.alpha!, pairs.keys, dropout, ranks, alphas)
        case Contract.adapterHydra:
            struct Pair: Equatable { let p: Int; let s: Int }
            let ranks = modules.mapValues { Pair(p: $0[parallel]!.r, s: $0[sequential]!.r) }
            let common = mostCommon(ranks.values)
            let alpha = mostCommon(modules.values.flatMap { $0.values.compactMap { $0.alpha } })
            var rankPattern = JSONObject()
            var alphaPattern = JSONObject()
            for (path, slots) in modules {
                let r = ranks[path]!
                if r != common { rankPattern[exactPattern(path)] = [parallel: .int(r.p), sequential: .int(r.s)] }
                let differ = slots.pairs.filter { $0.value.alpha != nil && $0.value.alpha != alpha }
                if !differ.isEmpty { alphaPattern[exactPattern(path)] = .object(JSONObject(differ.map { ($0.key, optional($0.value.alpha)) })) }
            }
            return hydraConfig(common.p, common.s, alpha, modules.keys, dropout, rankPattern, alphaPattern)
        default:
            throw ConfigError("adapter method \(Py.repr(method)) has no file format; expected one of \(Py.repr(Py.sorted(Array(Contract.peftTypes.keys)))).")
        }
    }

    public static func metadata(_ method: String, _ root: String, _ sdkVersion: String) -> JSON {
        ["method": .string(method), "root": .string(root), "mobile_peft_version": .string(sdkVersion), "format_version": .int(formatVersion)]
    }

    /// The two files' bytes: config JSON (sorted keys, indent 2, newline) and the safetensors.
    public static func fileBytes(_ config: JSONObject, _ tensors: [String: Tensor], _ metadata: JSON) -> OrderedDict<[UInt8]> {
        let header = ["format": "pt", metadataKey: Json.dumps(metadata, sortKeys: true)]
        return OrderedDict([
            (configFile, Array((Json.dumps(.object(config), indent: 2, sortKeys: true) + "\n").utf8)),
            (weightsFile, Safetensors.bytes(tensors, metadata: header)),
        ])
    }

    /// `write_adapter`: the effective adapter of `params` (manifest names -> values) at `masks`
    /// (graph-input order) as file name -> bytes; `write` puts them in a directory.
    public static func effectiveAdapter(_ schedule: RankSchedule, _ trainable: [Trainable], _ sdkVersion: String,
                                        _ params: [String: [Float]], _ masks: [[Float]]) throws -> OrderedDict<[UInt8]> {
        var maskOf: [String: [Float]] = [:]
        for (e, m) in zip(schedule.maskInputs, masks) { maskOf[Units.key(e.module, e.slot)] = m }
        // (module, slot) -> role -> tensor, in first-seen order.
        var slotsSeen: [(module: String, slot: String)] = []
        var pairs: [String: [String: Trainable]] = [:]
        for t in trainable {
            let key = Units.key(t.module, t.slot)
            if pairs[key] == nil { slotsSeen.append((t.module, t.slot)) }
            pairs[key, default: [:]][t.role] = t
        }
        var modules: [String] = []
        for t in trainable where !modules.contains(t.module) { modules.append(t.module) }
        let root = schedule.adapter == Contract.adapterLora && !modules.isEmpty && modules.allSatisfy({ $0.hasPrefix(lmRoot + ".") }) ? lmRoot : ""
        var effective = ModuleRanks()
        var tensors: [String: Tensor] = [:]
        for module in modules {
            let rel = root.isEmpty ? module : String(module.dropFirst(root.count + 1))
            var entry = OrderedDict<RankAlpha>()
            var moduleTensors: [(String, Tensor)] = []
            for (m, slot) in slotsSeen where m == module {
                let pair = pairs[Units.key(m, slot)]!
                guard let down = pair[Contract.roleDown] else { throw ConfigError("\(module).\(slot) has no \(Contract.roleDown) tensor") }
                guard let up = pair[Contract.roleUp] else { throw ConfigError("\(module).\(slot) has no \(Contract.roleUp) tensor") }
                guard let mask = maskOf[Units.key(m, slot)] else { throw ConfigError("no mask for \(module).\(slot)") }
                let active = mask.indices.filter { mask[$0] != 0 }
                guard let d = params[down.name] else { throw ConfigError("no values for \(down.name)") }
                guard let u = params[up.name] else { throw ConfigError("no values for \(up.name)") }
                let rMax = down.shape[0]
                let fanIn = down.shape[1]
                let out = up.shape[0]
                let n = active.count
                let downValues = try Tensor([n, fanIn], (0..<(n * fanIn)).map { d[active[$0 / fanIn] * fanIn + $0 % fanIn] })
                let upValues = try Tensor([out, n], (0..<(out * n)).map { i -> Float in
                    let r = active[i % n]
                    return u[(i / n) * rMax + r] * mask[r]
                })
                moduleTensors.append((down.param, downValues))
                moduleTensors.append((up.param, upValues))
                var alpha: Double?
                if n > 0 { alpha = try schedule.scale(module, slot) * Double(n) }
                entry[slot] = RankAlpha(r: n, alpha: alpha)
            }
            if !entry.values.contains(where: { $0.r != 0 }) { continue } // every rank masked off: nothing to save
            effective[rel] = entry
            for (param, t) in moduleTensors { tensors[tensorKey(rel, param)] = t }
        }
        if effective.isEmpty { throw ConfigError("every adapter module has all its ranks masked off; there is nothing to export.") }
        let config = try effectiveConfig(schedule.adapter, effective, schedule.dropout)
        return fileBytes(config, tensors, metadata(schedule.adapter, root, sdkVersion))
    }

    /// Write `files` (name -> bytes) into `dir`, each atomically.
    @discardableResult
    public static func write(_ dir: URL, _ files: OrderedDict<[UInt8]>) throws -> URL {
        if FileManager.default.fileExists(atPath: dir.path) && !Checksums.isDirectory(dir) {
            throw CheckpointError("cannot save an adapter to \(dir.path): it exists and is not a directory.")
        }
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        for (name, bytes) in files { try AtomicFiles.write(dir.appendingPathComponent(name), bytes) }
        return dir
    }
}
