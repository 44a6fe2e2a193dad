package org.mobilepeft.core

/**
 * HyDRA's dynamic phase (mobile_peft/core/realloc.py): per-unit gradient signals and the decision
 * to re-allocate ranks with the bundle's performance model.
 *
 * A unit's signal for one step is [rankSignal] (squared gradient per active rank: a diagonal-
 * Fisher estimate of what one more rank is worth), smoothed by [RankSignals] (EMA, reported as
 * its square root). Every `every` completed steps, while at least `every` steps remain,
 * [Reallocation.decide] asks [PerfModel.proposeAllocation] for the best ranks within the budget and
 * applies them when the predicted loss falls by at least `minGain` (relative).
 */
object Realloc {
    const val DEFAULT_DECAY = 0.8
    const val DEFAULT_MIN_GAIN = 0.002

    /**
     * `sum(gDown[a, :]^2) + sum(gUp[:, a]^2)` over the active ranks `a`, divided by their number:
     * [gDown] is `[rMax, fanIn]` and [gUp] `[out, rMax]`, row-major float32, summed in float64.
     */
    fun rankSignal(gDown: FloatArray, gUp: FloatArray, rMax: Int, active: BooleanArray): Double {
        require(active.size == rMax) { "active has ${active.size} entries; r_max is $rMax" }
        val n = active.count { it }
        if (n == 0) return 0.0
        val fanIn = gDown.size / rMax
        val out = gUp.size / rMax
        val down = DoubleArray(n * fanIn)
        var k = 0
        for (r in 0 until rMax) if (active[r]) for (j in 0 until fanIn) { val g = gDown[r * fanIn + j].toDouble(); down[k++] = g * g }
        val up = DoubleArray(out * n)
        k = 0
        for (o in 0 until out) for (r in 0 until rMax) if (active[r]) { val g = gUp[o * rMax + r].toDouble(); up[k++] = g * g }
        return (Numpy.sum(down) + Numpy.sum(up)) / n
    }
}

/** EMA of [Realloc.rankSignal] per unit (units never observed are absent). */
class RankSignals(val decay: Double = Realloc.DEFAULT_DECAY) {
    val sq = LinkedHashMap<String, Double>()

    fun observe(unit: String, value: Double) {
        val old = sq[unit]
        sq[unit] = if (old == null) value else decay * old + (1 - decay) * value
    }

    /** unit -> RMS gradient per active rank. */
    fun signals(): Map<String, Double> = sq.mapValues { Math.sqrt(it.value) }

    fun state(): Map<String, Any?> = mapOf(STATE_SQ to LinkedHashMap(sq))

    fun loadState(state: Map<String, Any?>) {
        sq.clear()
        (state[STATE_SQ] as? Map<*, *>)?.forEach { (k, v) -> sq[k.toString()] = Py.toFloat(v) }
    }

    companion object {
        const val STATE_SQ = "sq"
    }
}

/** What one re-allocation point decided; [ranks] equal [old] when the change was not applied. */
data class Decision(
    val step: Int,
    val applied: Boolean,
    val old: Map<String, Int>,
    val ranks: Map<String, Int>,
    val predictedBefore: Double,
    val predictedAfter: Double,
    val params: Long,
) {
    fun changed(): Map<String, List<Int>> =
        old.filter { (u, r) -> ranks.getValue(u) != r }.mapValues { (u, r) -> listOf(r, ranks.getValue(u)) }

    /** The event the SDK logs (`Decision.event`), as a JSON object. */
    fun event(budgetParams: Long): Map<String, Any?> {
        val changed = changed()
        return linkedMapOf(
            "kind" to "realloc",
            "step" to step,
            "applied" to applied,
            "predicted_loss_before" to PerfModel.round(predictedBefore, 6),
            "predicted_loss_after" to PerfModel.round(predictedAfter, 6),
            "params" to params,
            "budget_params" to budgetParams,
            "ranks_moved" to changed.values.sumOf { Math.abs(it[0] - it[1]) },
            "ranks_grown" to changed.values.sumOf { maxOf(0, it[1] - it[0]) },
            "changed" to if (applied) changed else emptyMap(),
        )
    }
}

/** When and how to re-allocate ranks with a fitted performance model (`Reallocation`). */
class Reallocation(
    model: Map<String, Any?>?,
    val units: Map<String, UnitInfo>,
    val budget: Long,
    val every: Int,
    val totalSteps: Int,
    val minGain: Double = Realloc.DEFAULT_MIN_GAIN,
) {
    val model: Map<String, Any?> = if (model.isNullOrEmpty()) {
        throw ConfigError(
            "on-device re-allocation needs a schedule planned by hydra-rank: it has no performance_model. " +
                "Plan with `--allocator hydra-rank` and re-export, or turn re-allocation off.",
        )
    } else model

    init {
        PerfModel.checkKind(this.model)
        if (every < 0) throw ConfigError("re-allocation every=$every steps; expected >= 0 (0 turns it off).")
    }

    val minRank: Int = (this.model[PerfModel.MIN_RANK]?.let(Py::toInt) ?: 1L).toInt()

    /** After [step] completed steps: a re-allocation point? */
    fun due(step: Int): Boolean = every > 0 && step > 0 && step % every == 0 && step + every <= totalSteps

    fun decide(step: Int, ranks: Map<String, Int>, signals: Map<String, Double>): Decision {
        val old = LinkedHashMap<String, Int>()
        for (u in units.keys) old[u] = ranks[u] ?: throw ConfigError("ranks have no entry for unit $u")
        val new = PerfModel.proposeAllocation(signals, model, units, budget, minRank)
        val before = PerfModel.predictLoss(model, old, signals, units)
        val after = PerfModel.predictLoss(model, new, signals, units)
        val applied = new != old && before - after > minGain * Math.abs(before)
        val chosen = if (applied) new else old
        val params = units.entries.sumOf { (u, c) -> chosen.getValue(u) * c.paramsPerRank }
        return Decision(step, applied, old, chosen, before, after, params)
    }
}
