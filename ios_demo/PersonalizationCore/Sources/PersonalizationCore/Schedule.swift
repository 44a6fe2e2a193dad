import Foundation

/// The bundle's rank schedule (mobile_peft/core/schedule.py): per adapted module and rank slot the
/// maximum rank, the cost of one rank and the branch scale; the active rank of each phase (a step
/// range); the graphs' mask inputs in order. Ranks reach the graphs as masks, so changing phase
/// never changes a shape: the phone feeds `phaseMasks` (or `inputMasks` after a re-allocation).
///
/// `RankSchedule.read` mirrors `RankSchedule.from_dict` + `problems()`: the same checks, in the
/// same order, with the same messages.
public enum ScheduleFormat {
    public static let schema = "mobile-peft/rank-schedule"
    public static let version = 1
    public static let budgetTolerance = 0.01
}

/// `rank_schedule.modules[m].slots[s]`; `scale` is `alpha / r_max` (absent in plans).
public struct SlotInfo: Equatable {
    public let rMax: Int
    public let paramsPerRank: Int
    public let scale: Double?
}

/// module -> slot -> active rank.
public typealias Ranks = [String: [String: Int]]

public struct Phase {
    public let startStep: Int
    public let ranks: Ranks
    /// Optional soft masks (ARD-LoRA), module -> slot -> values; absent slots use the prefix mask.
    public let masks: [String: [String: [Float]]]
    public init(startStep: Int, ranks: Ranks, masks: [String: [String: [Float]]] = [:]) {
        self.startStep = startStep
        self.ranks = ranks
        self.masks = masks
    }
}

/// One rank-mask input of the graphs, in graph-input order; its name follows the contract's rule.
public struct MaskInput: Equatable {
    public let module: String
    public let slot: String
    public let rMax: Int
    public var input: String { Contract.maskInputName(module: module, slot: slot) }
}

/// An allocation unit (`path::slot`) as the performance model sees it.
public struct UnitInfo: Equatable {
    public let rMax: Int
    public let paramsPerRank: Int
    public init(rMax: Int, paramsPerRank: Int) {
        self.rMax = rMax
        self.paramsPerRank = paramsPerRank
    }
}

/// The hard mask of `rank` active ranks out of `rMax`: `[1]*rank + [0]*(rMax - rank)`.
public func prefixMask(_ rank: Int, _ rMax: Int) -> [Float] { (0..<rMax).map { $0 < rank ? 1 : 0 } }

public struct RankSchedule {
    public let allocator: String
    public let adapter: String
    public let budgetParams: Int
    public let modules: OrderedDict<OrderedDict<SlotInfo>>
    public let phases: [Phase]
    public let maskInputs: [MaskInput]
    public let dropout: Double
    /// The fitted performance model (hydra-rank bundles), a JSON object; nil otherwise.
    public let performanceModel: JSONObject?

    /// Index of the phase active at `step`: the last one starting at or before it.
    public func phaseIndex(_ step: Int) -> Int {
        var index = 0
        for (i, p) in phases.enumerated() where p.startStep <= step { index = i }
        return index
    }

    public func phaseAt(_ step: Int) -> Phase { phases[phaseIndex(step)] }

    /// Mask values of `module`'s `slot` in `phase`: its soft values, else the prefix mask of its rank.
    public func mask(_ phase: Phase, _ module: String, _ slot: String) throws -> [Float] {
        if let soft = phase.masks[module]?[slot] { return soft }
        guard let rank = phase.ranks[module]?[slot] else {
            throw ConfigError("the phase starting at step \(phase.startStep) gives no rank for \(module).\(slot)")
        }
        return prefixMask(rank, try self.slot(module, slot).rMax)
    }

    /// One `[r_max]` mask per graph input (`maskInputs` order) for `ranks` (and `soft` values where given).
    public func inputMasks(_ ranks: Ranks, soft: [String: [String: [Float]]] = [:]) throws -> [[Float]] {
        let phase = Phase(startStep: 0, ranks: ranks, masks: soft)
        return try maskInputs.map { try mask(phase, $0.module, $0.slot) }
    }

    public func phaseMasks(_ index: Int) throws -> [[Float]] { try inputMasks(phases[index].ranks, soft: phases[index].masks) }

    public func ranks(_ index: Int) -> Ranks { phases[index].ranks }

    /// Trainable numbers active at `ranks`: sum of rank x params_per_rank.
    public func params(_ ranks: Ranks) throws -> Int {
        var total = 0
        for (m, slots) in ranks {
            for (s, r) in slots {
                let cost = try slot(m, s).paramsPerRank
                total += r * cost
            }
        }
        return total
    }

    /// Allocation units (`path::slot`) with `r_max > 0`, in schedule order.
    public func units() -> OrderedDict<UnitInfo> {
        var out = OrderedDict<UnitInfo>()
        for (m, slots) in modules {
            for (s, info) in slots where info.rMax > 0 { out[Units.key(m, s)] = UnitInfo(rMax: info.rMax, paramsPerRank: info.paramsPerRank) }
        }
        return out
    }

    /// Whether every slot records its branch scale (needed to write the personal adapter).
    public var hasScales: Bool { modules.values.allSatisfy { $0.values.allSatisfy { $0.scale != nil } } }

    public func scale(_ module: String, _ slot: String) throws -> Double {
        guard let s = try self.slot(module, slot).scale else {
            throw ConfigError(
                "\(Contract.Key.rankSchedule).\(Contract.ScheduleKey.modules)[\(Py.repr(module))].\(Contract.ScheduleKey.slots)[\(Py.repr(slot))] " +
                    "has no '\(Contract.SlotKey.scale)' (alpha / r_max); re-export the bundle with a mobile-peft that records adapter scales.")
        }
        return s
    }

    public func slot(_ module: String, _ slot: String) throws -> SlotInfo {
        guard let info = modules[module]?[slot] else { throw ConfigError("the rank schedule has no slot \(module).\(slot)") }
        return info
    }

    /// Parse and validate a schedule JSON object (`RankSchedule.from_dict`); every problem is
    /// reported in one `ConfigError` whose message is Python's ("invalid <where>:\n  - ...").
    public static func read(_ d: JSON?, where: String = "rank schedule") throws -> RankSchedule {
        try ScheduleReader(where: `where`).read(d)
    }

    /// The same schedule with `performanceModel` replaced (a bundle carries it at the top level).
    func with(performanceModel: JSONObject?) -> RankSchedule {
        RankSchedule(allocator: allocator, adapter: adapter, budgetParams: budgetParams, modules: modules, phases: phases,
                     maskInputs: maskInputs, dropout: dropout, performanceModel: performanceModel)
    }
}

/// `from_dict`: the schema and required keys, then the type of every field (`_structure_problems`),
/// then `problems()`; each stage reports all it finds, with Python's messages.
private struct ScheduleReader {
    let `where`: String

    struct RawPhase {
        let startStep: Int
        let ranks: OrderedDict<OrderedDict<Int>>
        let masks: [String: [String: [Float]]]
    }

    func fail(_ problems: [String]) -> ConfigError { ConfigError("invalid \(`where`):\n  - " + problems.joined(separator: "\n  - ")) }

    func isInt(_ v: JSON?) -> Bool { v?.int != nil }
    func isNumber(_ v: JSON?) -> Bool {
        if case .int? = v { return true }
        if case .double(let d)? = v { return d.isFinite }
        return false
    }

    func read(_ json: JSON?) throws -> RankSchedule {
        guard let d = json?.object else { throw ConfigError("invalid \(`where`): expected a JSON object, got \(Py.typeName(json)).") }
        var first: [String] = []
        if d[Contract.ScheduleKey.schema] != .string(ScheduleFormat.schema) {
            first.append("schema is \(Py.repr(d[Contract.ScheduleKey.schema])); expected \(Py.repr(ScheduleFormat.schema))")
        }
        if !Py.equal(d[Contract.ScheduleKey.version], .int(ScheduleFormat.version)) {
            first.append("version is \(Py.repr(d[Contract.ScheduleKey.version])); this mobile-peft reads version \(ScheduleFormat.version)")
        }
        first += Contract.rankScheduleKeys.filter { !d.contains($0) }.map { "missing key \(Py.repr($0))" }
        if !first.isEmpty { throw fail(first) }
        let structure = structureProblems(d)
        if !structure.isEmpty { throw fail(Array(structure.prefix(20))) }

        var modules = OrderedDict<OrderedDict<SlotInfo>>()
        for (m, v) in d[Contract.ScheduleKey.modules]!.object! {
            var slots = OrderedDict<SlotInfo>()
            for (s, info) in v[Contract.ScheduleKey.slots]!.object! {
                let i = info.object!
                slots[s] = SlotInfo(rMax: i[Contract.SlotKey.rMax]!.int!, paramsPerRank: i[Contract.SlotKey.paramsPerRank]!.int!,
                                    scale: i[Contract.SlotKey.scale]?.number)
            }
            modules[m] = slots
        }
        let phases: [RawPhase] = d[Contract.ScheduleKey.phases]!.array!.map { p in
            let po = p.object!
            let ranks = OrderedDict(po[Contract.PhaseKey.ranks]!.object!.pairs.map { m, r in
                (m, OrderedDict(r.object!.pairs.map { ($0.key, $0.value.int!) }))
            })
            var masks: [String: [String: [Float]]] = [:]
            if Py.truthy(po[Contract.PhaseKey.masks]), let mo = po[Contract.PhaseKey.masks]?.object {
                for (m, slots) in mo {
                    for (s, v) in slots.object! { masks[m, default: [:]][s] = v.array!.map { Float($0.number!) } }
                }
            }
            return RawPhase(startStep: po[Contract.PhaseKey.startStep]!.int!, ranks: ranks, masks: masks)
        }
        let entries = Py.truthy(d[Contract.ScheduleKey.maskInputs]) ? d[Contract.ScheduleKey.maskInputs]!.array! : []
        let maskInputs = entries.map { e in
            MaskInput(module: e[Contract.MaskInputKey.module]!.string!, slot: e[Contract.MaskInputKey.slot]!.string!,
                      rMax: e[Contract.MaskInputKey.rMax]!.int!)
        }
        let budget = d[Contract.ScheduleKey.budgetParams]!.int!
        let dropout = Py.truthy(d[Contract.ScheduleKey.dropout]) ? d[Contract.ScheduleKey.dropout]!.number! : 0
        let found = problems(modules, phases, maskInputs, budget)
        if !found.isEmpty { throw fail(found) }
        return RankSchedule(
            allocator: d[Contract.ScheduleKey.allocator]!.string!,
            adapter: d[Contract.ScheduleKey.adapter]!.string!,
            budgetParams: budget,
            modules: modules,
            phases: phases.map { p in
                Phase(startStep: p.startStep, ranks: p.ranks.dictionary.mapValues { $0.dictionary }, masks: p.masks)
            },
            maskInputs: maskInputs,
            dropout: dropout,
            performanceModel: d[Contract.ScheduleKey.performanceModel]?.object
        )
    }

    /// `_structure_problems`: the types of every field the schedule is built from (untrusted data).
    func structureProblems(_ d: JSONObject) -> [String] {
        var out: [String] = []
        if d[Contract.ScheduleKey.allocator]?.string == nil || d[Contract.ScheduleKey.adapter]?.string == nil {
            out.append("allocator and adapter must be strings")
        }
        let budget = d[Contract.ScheduleKey.budgetParams]
        if !(isInt(budget) && budget!.int! >= 0) { out.append("budget_params is \(Py.repr(budget)); expected a whole number >= 0") }
        if d.contains(Contract.ScheduleKey.dropout) {
            let p = d[Contract.ScheduleKey.dropout]
            if !(isNumber(p) && p!.number! >= 0 && p!.number! < 1) { out.append("dropout is \(Py.repr(p)); expected a probability in [0, 1)") }
        }
        guard let modules = d[Contract.ScheduleKey.modules]?.object else {
            return out + ["modules is a \(Py.typeName(d[Contract.ScheduleKey.modules])), expected an object"]
        }
        for (m, v) in modules {
            guard let slots = v[Contract.ScheduleKey.slots]?.object else {
                out.append("modules[\(Py.repr(m))] has no slots object")
                continue
            }
            for (slot, info) in slots {
                let at = "modules[\(Py.repr(m))].slots[\(Py.repr(slot))]"
                guard let i = info.object, i.contains(Contract.SlotKey.rMax), i.contains(Contract.SlotKey.paramsPerRank) else {
                    out.append("\(at) needs r_max and params_per_rank")
                    continue
                }
                if !(isInt(i[Contract.SlotKey.rMax]) && i[Contract.SlotKey.rMax]!.int! >= 0 &&
                    isInt(i[Contract.SlotKey.paramsPerRank]) && i[Contract.SlotKey.paramsPerRank]!.int! >= 0) {
                    out.append("\(at) r_max/params_per_rank must be whole numbers >= 0")
                } else if i.contains(Contract.SlotKey.scale) && !isNumber(i[Contract.SlotKey.scale]) {
                    out.append("\(at).scale is \(Py.repr(i[Contract.SlotKey.scale])); expected a finite number")
                }
            }
        }
        guard let phases = d[Contract.ScheduleKey.phases]?.array else {
            return out + ["phases is a \(Py.typeName(d[Contract.ScheduleKey.phases])), expected a list"]
        }
        for (i, phase) in phases.enumerated() {
            guard let po = phase.object, Contract.phaseKeys.allSatisfy({ po.contains($0) }),
                  isInt(po[Contract.PhaseKey.startStep]), let ranks = po[Contract.PhaseKey.ranks]?.object else {
                out.append("phases[\(i)] needs a whole-number start_step and a ranks object")
                continue
            }
            for (m, r) in ranks {
                if !(r.object.map { $0.allSatisfy { isInt($0.value) } } ?? false) {
                    out.append("phases[\(i)].ranks[\(Py.repr(m))] must map slot names to whole numbers")
                }
            }
            let masks: JSON = po[Contract.PhaseKey.masks] ?? .object(JSONObject())  // absent: none; null or [] is an error
            let ok = masks.object.map { mo in
                mo.allSatisfy { slots in
                    slots.value.object.map { so in so.allSatisfy { v in v.value.array.map { $0.allSatisfy { isNumber($0) } } ?? false } } ?? false
                }
            } ?? false
            if !ok { out.append("phases[\(i)].masks must map module -> slot -> a list of finite numbers") }
        }
        let entriesValue: JSON = d[Contract.ScheduleKey.maskInputs] ?? .array([])  // absent: none; null is an error
        guard let entries = entriesValue.array else { return out + ["mask_inputs is a \(Py.typeName(entriesValue)), expected a list"] }
        for (j, e) in entries.enumerated() {
            guard let module = e[Contract.MaskInputKey.module]?.string, let slot = e[Contract.MaskInputKey.slot]?.string,
                  isInt(e[Contract.MaskInputKey.rMax]) else {
                out.append("mask_inputs[\(j)] needs module, slot (strings) and r_max (a whole number)")
                continue
            }
            let name = Contract.maskInputName(module: module, slot: slot)
            if e[Contract.MaskInputKey.input] != .string(name) {
                out.append("mask_inputs[\(j)].input is \(Py.repr(e[Contract.MaskInputKey.input])); expected \(Py.repr(name)) (the graph input's name)")
            }
        }
        return out
    }

    /// `RankSchedule.problems()`, message for message.
    func problems(_ modules: OrderedDict<OrderedDict<SlotInfo>>, _ phases: [RawPhase], _ maskInputs: [MaskInput], _ budget: Int) -> [String] {
        var out: [String] = []
        if phases.isEmpty {
            out.append("no phases: a schedule needs at least one phase starting at step 0")
        } else if phases[0].startStep != 0 {
            out.append("first phase starts at step \(phases[0].startStep); it must start at 0")
        }
        let starts = phases.map { $0.startStep }
        if starts != Array(Set(starts)).sorted() { out.append("phase start steps \(Py.repr(starts)) are not strictly increasing") }
        for (i, phase) in phases.enumerated() {
            let unknown = Py.sorted(phase.ranks.keys.filter { !modules.contains($0) })
            if !unknown.isEmpty { out.append("phase \(i) names unknown modules \(Py.repr(Array(unknown.prefix(3))))") }
            let missing = Py.sorted(modules.keys.filter { !phase.ranks.contains($0) })
            if !missing.isEmpty { out.append("phase \(i) gives no rank for modules \(Py.repr(Array(missing.prefix(3))))") }
            var badRank = false
            for (module, slots) in phase.ranks {
                for (slot, rank) in slots {
                    guard let info = modules[module]?[slot] else {
                        if modules.contains(module) {
                            out.append("phase \(i): module \(Py.repr(module)) has no slot \(Py.repr(slot))")
                            badRank = true
                        }
                        continue
                    }
                    if rank < 0 || rank > info.rMax {
                        out.append("phase \(i): rank \(rank) of \(module).\(slot) is outside 0..r_max=\(info.rMax)")
                        badRank = true
                    }
                    if let mask = phase.masks[module]?[slot], mask.count != info.rMax {
                        out.append("phase \(i): mask of \(module).\(slot) has \(mask.count) values; r_max is \(info.rMax)")
                    }
                }
            }
            if unknown.isEmpty && !badRank {
                var used = 0
                for (m, s) in phase.ranks { for (k, r) in s { used += r * modules[m]![k]!.paramsPerRank } }
                if Double(used) > Double(budget) * (1 + ScheduleFormat.budgetTolerance) {
                    out.append("phase \(i) uses \(Py.grouped(used)) trainable parameters, over the budget of \(Py.grouped(budget)) (+1%)")
                }
            }
        }
        for (j, entry) in maskInputs.enumerated() {
            if let info = modules[entry.module]?[entry.slot] {
                if info.rMax != entry.rMax {
                    out.append("mask_inputs[\(j)] (\(entry.module).\(entry.slot)) has r_max \(entry.rMax); the module has \(info.rMax)")
                }
            } else {
                out.append("mask_inputs[\(j)] names \(entry.module).\(entry.slot), which the schedule does not have")
            }
        }
        return out
    }
}
