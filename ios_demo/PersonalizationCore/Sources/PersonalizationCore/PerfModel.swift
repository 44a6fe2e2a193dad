import Foundation

/// HyDRA's lightweight performance model and its budgeted search (mobile_peft/core/perf_model.py;
/// the model itself, "sensitivity-weighted log-rank utility", is documented there). The phone only
/// evaluates a fitted model from its bundle, it never fits one:
///
///     phi_g     = sum_{i in g} s_i log(1 + r_i) / Z,    Z = sum_i s_i log(1 + r_max_i)
///     phi_depth = sum_i s_i d_i log(1 + r_i) / Z,       predicted loss = b + w . phi
///
/// with `s_i` the unit's gradient signal normalised to mean 1 (+1e-3), `d_i` its relative depth in
/// its tower (-0.5 .. +0.5) and `g` its group (tower x block). `proposeAllocation` gives ranks
/// greedily by utility per parameter within the budget (+1%). Sums use numpy's pairwise summation
/// (`Numpy.sum`) so the features are the SDK's to the last bit where libm agrees.
public enum PerfModel {
    public static let groups = ["vision.attn", "vision.mlp", "projector.proj", "language.attn", "language.mlp"]
    public static let featureList = groups + ["depth"]

    // Keys of the fitted model's JSON object (mobile_peft/core/perf_model.py fit_performance_model).
    public static let featureNames = "feature_names"
    public static let weightsKey = "weights"
    public static let intercept = "intercept"
    public static let minRankKey = "min_rank"

    /// The min_rank floor may take at most this share of the budget.
    public static let maxFloorShare = 0.5

    /// `("language.mlp", 3)`: the group and layer of unit `path::slot`.
    public static func unitGroup(_ unit: String) -> (String, Int) {
        let place = Units.place(Units.split(unit).0)
        let tower = place.tower == "vision" || place.tower == "projector" ? place.tower : "language"
        return ("\(tower).\(place.block)", place.layer)
    }

    private static func tower(_ group: String) -> String { String(group.split(separator: ".", maxSplits: 1)[0]) }

    private static func layout(_ units: [String]) -> (groups: [Int], depth: [Double]) {
        let places = units.map(unitGroup)
        var deepest: [String: Int] = [:]
        for (group, layer) in places { deepest[tower(group)] = max(deepest[tower(group)] ?? 0, layer) }
        let groups = places.map { p in PerfModel.groups.firstIndex(of: p.0) ?? -1 }
        let depth = places.map { p -> Double in
            let d = deepest[tower(p.0)]!
            return d != 0 ? Double(p.1) / Double(d) - 0.5 : 0
        }
        return (groups, depth)
    }

    private static func normalised(_ signals: [String: Double], _ units: [String]) -> [Double] {
        let s = units.map { max(signals[$0] ?? 0, 0) }
        let mean = !s.isEmpty && Numpy.sum(s) / Double(s.count) > 0 ? Numpy.sum(s) / Double(s.count) : 1
        return s.map { $0 / mean + 1e-3 } // a floor: a unit never has exactly zero worth
    }

    /// The feature vector (order: `featureList`) of one rank configuration.
    public static func features(_ ranks: [String: Int], _ signals: [String: Double], _ units: OrderedDict<UnitInfo>) -> [Double] {
        let names = Py.sorted(units.keys)
        let lay = layout(names)
        let s = normalised(signals, names)
        var z = Numpy.sum(names.indices.map { s[$0] * log1p(Double(units[names[$0]]!.rMax)) })
        if z == 0 { z = 1 }
        let contrib = names.indices.map { s[$0] * log1p(Double(ranks[names[$0]] ?? 0)) / z }
        var phi = [Double](repeating: 0, count: featureList.count)
        for i in names.indices { phi[lay.groups[i]] += contrib[i] }
        phi[featureList.count - 1] = Numpy.sum(names.indices.map { contrib[$0] * lay.depth[$0] })
        return phi
    }

    private static func weights(_ model: JSONObject) throws -> [Double] {
        let names = model[featureNames]
        if names != JSON(featureList) { throw ConfigError("performance model features \(Py.repr(names)) differ from \(Py.repr(featureList))") }
        guard let w = model[weightsKey]?.array else { throw ConfigError("performance model has no '\(weightsKey)' list") }
        return try w.map { try Py.toFloat($0) }
    }

    public static func predictLoss(_ model: JSONObject, _ ranks: [String: Int], _ signals: [String: Double], _ units: OrderedDict<UnitInfo>) throws -> Double {
        let w = try weights(model)
        let phi = features(ranks, signals, units)
        var dot = 0.0
        for i in phi.indices { dot += w[i] * phi[i] }
        return try Py.toFloat(model[intercept]) + dot
    }

    /// `u_i`: predicted loss decrease per unit of `log(1 + r_i)`, by unit.
    public static func unitUtilities(_ model: JSONObject, _ signals: [String: Double], _ units: OrderedDict<UnitInfo>) throws -> [String: Double] {
        let names = Py.sorted(units.keys)
        let lay = layout(names)
        let s = normalised(signals, names)
        let w = try weights(model)
        var out: [String: Double] = [:]
        for i in names.indices { out[names[i]] = -(w[lay.groups[i]] + w[w.count - 1] * lay.depth[i]) * s[i] }
        return out
    }

    /// Give one rank at a time to the unit with the best `gain(unit, r) / params_per_rank` until
    /// nothing fits in the budget (+1%) or it is reached; ties go to the first unit in `costs` order.
    public static func greedyFill(_ gain: (String, Int) -> Double, _ costs: OrderedDict<UnitInfo>, _ budget: Int, _ start: [String: Int]) -> OrderedDict<Int> {
        var ranks = OrderedDict<Int>()
        for u in costs.keys { ranks[u] = start[u] ?? 0 }
        var used = costs.pairs.reduce(0) { $0 + ranks[$1.key]! * $1.value.paramsPerRank }
        while used < budget {
            var best: String?
            var bestScore = -Double.infinity
            for (u, c) in costs {
                if ranks[u]! >= c.rMax || Double(used + c.paramsPerRank) > Double(budget) * (1 + ScheduleFormat.budgetTolerance) { continue }
                let score = gain(u, ranks[u]!) / Double(c.paramsPerRank)
                if score > bestScore {
                    best = u
                    bestScore = score
                }
            }
            guard let b = best else { break }
            ranks[b] = ranks[b]! + 1
            used += costs[b]!.paramsPerRank
        }
        return ranks
    }

    /// The allocation (unit -> rank) maximising the predicted loss decrease within `budget`: every
    /// unit starts at `minRank` (capped by its r_max; from zero when that floor would take more than
    /// `maxFloorShare` of the budget), then ranks go greedily to the best utility per parameter.
    public static func proposeAllocation(_ signals: [String: Double], _ model: JSONObject, _ units: OrderedDict<UnitInfo>, _ budget: Int, minRank: Int = 1) throws -> OrderedDict<Int> {
        let util = try unitUtilities(model, signals, units)
        var start = units.dictionary.mapValues { min(minRank, $0.rMax) }
        let floor = units.pairs.reduce(0, { $0 + start[$1.key]! * $1.value.paramsPerRank })
        if Double(floor) > Double(budget) * maxFloorShare {
            start = units.dictionary.mapValues { _ in 0 }
        }
        return greedyFill({ u, r in util[u]! * (log(2.0 + Double(r)) - log(1.0 + Double(r))) }, units, budget, start)
    }
}

/// The few numpy reductions whose rounding the SDK's numbers depend on.
public enum Numpy {
    private static let block = 128

    /// `np.sum` of a float64 array: `0.0 +` numpy's pairwise summation (8 accumulators, blocks of 128).
    public static func sum(_ a: [Double]) -> Double { 0.0 + pairwise(a, 0, a.count) }

    private static func pairwise(_ a: [Double], _ from: Int, _ n: Int) -> Double {
        if n < 8 {
            var res = 0.0
            for i in 0..<n { res += a[from + i] }
            return res
        }
        if n <= block {
            var r = (0..<8).map { a[from + $0] }
            var i = 8
            while i < n - n % 8 {
                for j in 0..<8 { r[j] += a[from + i + j] }
                i += 8
            }
            var res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
            while i < n {
                res += a[from + i]
                i += 1
            }
            return res
        }
        var n2 = n / 2
        n2 -= n2 % 8
        return pairwise(a, from, n2) + pairwise(a, from + n2, n - n2)
    }
}
