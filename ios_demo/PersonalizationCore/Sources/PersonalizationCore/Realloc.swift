import Foundation

/// HyDRA's dynamic phase (mobile_peft/core/realloc.py): per-unit gradient signals and the decision
/// to re-allocate ranks with the bundle's performance model.
///
/// A unit's signal for one step is `rankSignal` (squared gradient per active rank: a diagonal-
/// Fisher estimate of what one more rank is worth), smoothed by `RankSignals` (EMA, reported as
/// its square root). Every `every` completed steps, while at least `every` steps remain,
/// `Reallocation.decide` asks `PerfModel.proposeAllocation` for the best ranks within the budget and
/// applies them when the predicted loss falls by at least `minGain` (relative).
public enum Realloc {
    public static let defaultDecay = 0.8
    public static let defaultMinGain = 0.002

    /// `sum(gDown[a, :]^2) + sum(gUp[:, a]^2)` over the active ranks `a`, divided by their number:
    /// `gDown` is `[rMax, fanIn]` and `gUp` `[out, rMax]`, row-major float32, summed in float64.
    public static func rankSignal(_ gDown: [Float], _ gUp: [Float], _ rMax: Int, _ active: [Bool]) throws -> Double {
        if active.count != rMax { throw ConfigError("active has \(active.count) entries; r_max is \(rMax)") }
        let n = active.filter { $0 }.count
        if n == 0 { return 0 }
        let fanIn = gDown.count / rMax
        let out = gUp.count / rMax
        var down: [Double] = []
        down.reserveCapacity(n * fanIn)
        for r in 0..<rMax where active[r] {
            for j in 0..<fanIn {
                let g = Double(gDown[r * fanIn + j])
                down.append(g * g)
            }
        }
        var up: [Double] = []
        up.reserveCapacity(out * n)
        for o in 0..<out {
            for r in 0..<rMax where active[r] {
                let g = Double(gUp[o * rMax + r])
                up.append(g * g)
            }
        }
        return (Numpy.sum(down) + Numpy.sum(up)) / Double(n)
    }
}

/// EMA of `Realloc.rankSignal` per unit (units never observed are absent).
public final class RankSignals {
    public static let stateSq = "sq"
    public let decay: Double
    public private(set) var sq = OrderedDict<Double>()

    public init(decay: Double = Realloc.defaultDecay) { self.decay = decay }

    public func observe(_ unit: String, _ value: Double) {
        if let old = sq[unit] { sq[unit] = decay * old + (1 - decay) * value } else { sq[unit] = value }
    }

    /// unit -> RMS gradient per active rank.
    public func signals() -> [String: Double] { sq.dictionary.mapValues { $0.squareRoot() } }

    public func state() -> JSON { [RankSignals.stateSq: .object(JSONObject(sq.pairs.map { ($0.key, JSON.double($0.value)) }))] }

    public func loadState(_ state: JSONObject) throws {
        sq = OrderedDict()
        for (k, v) in state[RankSignals.stateSq]?.object ?? JSONObject() { sq[k] = try Py.toFloat(v) }
    }
}

/// What one re-allocation point decided; `ranks` equal `old` when the change was not applied.
public struct Decision {
    public let step: Int
    public let applied: Bool
    public let old: OrderedDict<Int>
    public let ranks: OrderedDict<Int>
    public let predictedBefore: Double
    public let predictedAfter: Double
    public let params: Int

    /// unit -> [old, new] of the units whose rank differs, in unit order.
    public func changed() -> OrderedDict<[Int]> {
        OrderedDict(old.pairs.filter { ranks[$0.key]! != $0.value }.map { ($0.key, [$0.value, ranks[$0.key]!]) })
    }

    /// The event the SDK logs (`Decision.event`), as a JSON object.
    public func event(_ budgetParams: Int) -> JSONObject {
        let changed = changed()
        return JSONObject([
            ("kind", "realloc"),
            ("step", .int(step)),
            ("applied", .bool(applied)),
            ("predicted_loss_before", .double(Py.round(predictedBefore, 6))),
            ("predicted_loss_after", .double(Py.round(predictedAfter, 6))),
            ("params", .int(params)),
            ("budget_params", .int(budgetParams)),
            ("ranks_moved", .int(changed.values.reduce(0) { $0 + abs($1[0] - $1[1]) })),
            ("ranks_grown", .int(changed.values.reduce(0) { $0 + max(0, $1[1] - $1[0]) })),
            ("changed", .object(applied ? JSONObject(changed.pairs.map { ($0.key, JSON($0.value)) }) : JSONObject())),
        ])
    }
}

/// When and how to re-allocate ranks with a fitted performance model (`Reallocation`).
public struct Reallocation {
    public let model: JSONObject
    public let units: OrderedDict<UnitInfo>
    public let budget: Int
    public let every: Int
    public let totalSteps: Int
    public let minGain: Double
    public let minRank: Int

    public init(_ model: JSONObject?, units: OrderedDict<UnitInfo>, budget: Int, every: Int, totalSteps: Int,
                minGain: Double = Realloc.defaultMinGain) throws {
        guard let model, !model.isEmpty else {
            throw ConfigError(
                "on-device re-allocation needs a schedule planned by hydra-rank: it has no performance_model. " +
                    "Plan with `--allocator hydra-rank` and re-export, or turn re-allocation off.")
        }
        if every < 0 { throw ConfigError("re-allocation every=\(every) steps; expected >= 0 (0 turns it off).") }
        self.model = model
        self.units = units
        self.budget = budget
        self.every = every
        self.totalSteps = totalSteps
        self.minGain = minGain
        minRank = try model[PerfModel.minRankKey].map { try Py.toInt($0) } ?? 1
    }

    /// After `step` completed steps: a re-allocation point?
    public func due(_ step: Int) -> Bool { every > 0 && step > 0 && step % every == 0 && step + every <= totalSteps }

    public func decide(_ step: Int, _ ranks: OrderedDict<Int>, _ signals: [String: Double]) throws -> Decision {
        var old = OrderedDict<Int>()
        for u in units.keys {
            guard let r = ranks[u] else { throw ConfigError("ranks have no entry for unit \(u)") }
            old[u] = r
        }
        let new = try PerfModel.proposeAllocation(signals, model, units, budget, minRank: minRank)
        let before = try PerfModel.predictLoss(model, old.dictionary, signals, units)
        let after = try PerfModel.predictLoss(model, new.dictionary, signals, units)
        let applied = new != old && before - after > minGain * abs(before)
        let chosen = applied ? new : old
        let params = units.pairs.reduce(0) { $0 + chosen[$1.key]! * $1.value.paramsPerRank }
        return Decision(step: step, applied: applied, old: old, ranks: chosen, predictedBefore: before, predictedAfter: after, params: params)
    }
}
