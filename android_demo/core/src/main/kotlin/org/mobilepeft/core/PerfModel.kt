package org.mobilepeft.core

import java.math.BigDecimal
import java.math.RoundingMode

/**
 * HyDRA's lightweight performance model and its budgeted search (mobile_peft/core/perf_model.py;
 * the model itself, "sensitivity-weighted log-rank utility", is documented there). The phone only
 * evaluates a fitted model from its bundle, it never fits one:
 *
 *     phi_g     = sum_{i in g} s_i log(1 + r_i) / Z,    Z = sum_i s_i log(1 + r_max_i)
 *     phi_depth = sum_i s_i d_i log(1 + r_i) / Z,       predicted loss = b + w . phi
 *
 * with `s_i` the unit's gradient signal normalised to mean 1 (+1e-3), `d_i` its relative depth in
 * its tower (-0.5 .. +0.5) and `g` its group (tower x block). [proposeAllocation] gives ranks
 * greedily by utility per parameter within the budget (+1%).
 *
 * Sums use numpy's pairwise summation ([Numpy.sum]) so the features are the SDK's to the last
 * bit where libm agrees; the one 6-term dot product may differ in the last place from BLAS.
 */
object PerfModel {
    val GROUPS = listOf("vision.attn", "vision.mlp", "projector.proj", "language.attn", "language.mlp")
    val FEATURES = GROUPS + "depth"

    // Keys of the fitted model's JSON object (mobile_peft/core/perf_model.py fit_performance_model).
    const val FEATURE_NAMES = "feature_names"
    const val WEIGHTS = "weights"
    const val INTERCEPT = "intercept"
    const val MIN_RANK = "min_rank"
    const val KIND = "kind"
    const val VERSION = "version"

    /** The one model kind and version this app evaluates (the SDK also writes `hydra-rank/spectral-ridge` v2, not mirrored yet). */
    const val MODEL_KIND = "hydra-rank/logrank-ridge"
    const val MODEL_VERSION = 1

    /** The min_rank floor may take at most this share of the budget. */
    const val MAX_FLOOR_SHARE = 0.5

    /** `("language.mlp", 3)`: the group and layer of unit `path::slot`. */
    fun unitGroup(unit: String): Pair<String, Int> {
        val place = Units.place(Units.split(unit).first)
        val tower = if (place.tower == "vision" || place.tower == "projector") place.tower else "language"
        return "$tower.${place.block}" to place.layer
    }

    private class Layout(val groups: IntArray, val depth: DoubleArray)

    private fun layout(units: List<String>): Layout {
        val places = units.map(::unitGroup)
        val deepest = HashMap<String, Int>()
        for ((group, layer) in places) {
            val tower = group.substringBefore('.')
            deepest[tower] = maxOf(deepest[tower] ?: 0, layer)
        }
        val groups = IntArray(units.size) { GROUPS.indexOf(places[it].first) }
        val depth = DoubleArray(units.size) {
            val (group, layer) = places[it]
            val d = deepest.getValue(group.substringBefore('.'))
            if (d != 0) layer.toDouble() / d - 0.5 else 0.0
        }
        return Layout(groups, depth)
    }

    private fun normalised(signals: Map<String, Double>, units: List<String>): DoubleArray {
        val s = DoubleArray(units.size) { maxOf(signals[units[it]] ?: 0.0, 0.0) }
        val mean = if (s.isNotEmpty() && Numpy.sum(s) / s.size > 0) Numpy.sum(s) / s.size else 1.0
        return DoubleArray(s.size) { s[it] / mean + 1e-3 } // a floor: a unit never has exactly zero worth
    }

    /** The feature vector (order: [FEATURES]) of one rank configuration. */
    fun features(ranks: Map<String, Int>, signals: Map<String, Double>, units: Map<String, UnitInfo>): DoubleArray {
        val names = units.keys.sortedWith(Py.STRING_ORDER)
        val layout = layout(names)
        val s = normalised(signals, names)
        val z = Numpy.sum(DoubleArray(names.size) { s[it] * Math.log1p(units.getValue(names[it]).rMax.toDouble()) }).let { if (it == 0.0) 1.0 else it }
        val contrib = DoubleArray(names.size) { s[it] * Math.log1p((ranks[names[it]] ?: 0).toDouble()) / z }
        val phi = DoubleArray(FEATURES.size)
        for (i in names.indices) phi[layout.groups[i]] += contrib[i]
        phi[FEATURES.size - 1] = Numpy.sum(DoubleArray(names.size) { contrib[it] * layout.depth[it] })
        return phi
    }

    /** Refuses a model of another kind or version (one without a kind predates kinds: a logrank v1 model). */
    fun checkKind(model: Map<String, Any?>) {
        val kind = model[KIND] ?: MODEL_KIND
        val version = model[VERSION] ?: if (kind == MODEL_KIND) MODEL_VERSION else null
        if (kind != MODEL_KIND || (version as? Number)?.toDouble() != MODEL_VERSION.toDouble()) {
            throw ConfigError(
                "performance model kind ${Py.repr(kind)} version ${Py.repr(version)} is not one this app reads " +
                    "($MODEL_KIND v$MODEL_VERSION); update the app, or re-plan the bundle with a hydra-rank model of that kind.",
            )
        }
    }

    private fun weights(model: Map<String, Any?>): DoubleArray {
        checkKind(model)
        val names = model[FEATURE_NAMES] as? List<*>
        if (names != FEATURES) throw ConfigError("performance model features ${Py.repr(names)} differ from ${Py.repr(FEATURES)}")
        val w = model[WEIGHTS] as? List<*> ?: throw ConfigError("performance model has no '$WEIGHTS' list")
        return DoubleArray(w.size) { Py.toFloat(w[it]) }
    }

    fun predictLoss(model: Map<String, Any?>, ranks: Map<String, Int>, signals: Map<String, Double>, units: Map<String, UnitInfo>): Double {
        val w = weights(model)
        val phi = features(ranks, signals, units)
        var dot = 0.0
        for (i in phi.indices) dot += w[i] * phi[i]
        return Py.toFloat(model[INTERCEPT]) + dot
    }

    /** `u_i`: predicted loss decrease per unit of `log(1 + r_i)`, by unit. */
    fun unitUtilities(model: Map<String, Any?>, signals: Map<String, Double>, units: Map<String, UnitInfo>): Map<String, Double> {
        val names = units.keys.sortedWith(Py.STRING_ORDER)
        val layout = layout(names)
        val s = normalised(signals, names)
        val w = weights(model)
        return names.indices.associate { names[it] to -(w[layout.groups[it]] + w[w.size - 1] * layout.depth[it]) * s[it] }
    }

    /**
     * Give one rank at a time to the unit with the best `gain(unit, r) / params_per_rank` until
     * nothing fits in the budget (+1%) or it is reached; ties go to the first unit in [costs] order.
     */
    fun greedyFill(gain: (String, Int) -> Double, costs: Map<String, UnitInfo>, budget: Long, start: Map<String, Int>): LinkedHashMap<String, Int> {
        val ranks = LinkedHashMap<String, Int>()
        for (u in costs.keys) ranks[u] = start[u] ?: 0
        var used = costs.entries.sumOf { (u, c) -> ranks.getValue(u) * c.paramsPerRank }
        while (used < budget) {
            var best: String? = null
            var bestScore = Double.NEGATIVE_INFINITY
            for ((u, c) in costs) {
                if (ranks.getValue(u) >= c.rMax || used + c.paramsPerRank > budget * (1 + ScheduleFormat.BUDGET_TOLERANCE)) continue
                val score = gain(u, ranks.getValue(u)) / c.paramsPerRank
                if (score > bestScore) {
                    best = u
                    bestScore = score
                }
            }
            if (best == null) break
            ranks[best] = ranks.getValue(best) + 1
            used += costs.getValue(best).paramsPerRank
        }
        return ranks
    }

    /**
     * The allocation (unit -> rank) maximising the predicted loss decrease within [budget]: every
     * unit starts at [minRank] (capped by its r_max; from zero when that floor would take more than
     * [MAX_FLOOR_SHARE] of the budget), then ranks go greedily to the best utility per parameter.
     */
    fun proposeAllocation(signals: Map<String, Double>, model: Map<String, Any?>, units: Map<String, UnitInfo>, budget: Long, minRank: Int = 1): LinkedHashMap<String, Int> {
        val util = unitUtilities(model, signals, units)
        var start = units.mapValues { (_, c) -> minOf(minRank, c.rMax) }
        if (units.entries.sumOf { (u, c) -> start.getValue(u) * c.paramsPerRank } > budget * MAX_FLOOR_SHARE) {
            start = units.mapValues { 0 }
        }
        return greedyFill({ u, r -> util.getValue(u) * (Math.log(2.0 + r) - Math.log(1.0 + r)) }, units, budget, start)
    }

    /** Python's `round(x, digits)`: to the nearest multiple of 10^-digits of the exact value, ties to even. */
    fun round(x: Double, digits: Int): Double =
        if (!x.isFinite()) x else BigDecimal(x).setScale(digits, RoundingMode.HALF_EVEN).toDouble()
}

/** The few numpy reductions whose rounding the SDK's numbers depend on. */
object Numpy {
    private const val BLOCK = 128

    /** `np.sum` of a float64 array: `0.0 +` numpy's pairwise summation (8 accumulators, blocks of 128). */
    fun sum(a: DoubleArray): Double = 0.0 + pairwise(a, 0, a.size)

    private fun pairwise(a: DoubleArray, from: Int, n: Int): Double {
        if (n < 8) {
            var res = 0.0
            for (i in 0 until n) res += a[from + i]
            return res
        }
        if (n <= BLOCK) {
            val r = DoubleArray(8) { a[from + it] }
            var i = 8
            while (i < n - n % 8) {
                for (j in 0 until 8) r[j] += a[from + i + j]
                i += 8
            }
            var res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
            while (i < n) res += a[from + i++]
            return res
        }
        var n2 = n / 2
        n2 -= n2 % 8
        return pairwise(a, from, n2) + pairwise(a, from + n2, n - n2)
    }
}
