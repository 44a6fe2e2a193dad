package org.mobilepeft.core

/**
 * On-device rank re-allocation for `hydra-rank` bundles (runtime/realloc.py `Reallocator`): the
 * core's [Reallocation] decision fed with the runtime's own gradients and the performance model
 * the bundle ships.
 *
 * Signals are [Realloc.rankSignal] over each slot's active (first `rank`) ranks; the tensors of a
 * slot are found by their recorded roles (down `[r_max, fan_in]`, up `[out, r_max]`), never by
 * name. Growing a slot re-initialises its new rows/columns as LoRA does ([growInit]: down rows
 * uniform in `±1/sqrt(fan_in)`, up columns zero), drawn from numpy's `default_rng([seed, step])`
 * in unit order, so a resumed run grows the same values as an uninterrupted one.
 */
class Reallocator(
    schedule: RankSchedule,
    model: Map<String, Any?>?,
    trainable: List<Trainable>,
    every: Int,
    totalSteps: Int,
    val seed: Long = 0,
) {
    val policy = Reallocation(model, schedule.units(), schedule.budgetParams, every, totalSteps)
    val budget: Long = schedule.budgetParams
    val signals = RankSignals()
    private val pairs: Map<String, Map<String, Trainable>> = LinkedHashMap<String, MutableMap<String, Trainable>>().apply {
        for (t in trainable) getOrPut(Units.key(t.module, t.slot)) { LinkedHashMap() }[t.role] = t
    }

    fun state(): Map<String, Any?> = signals.state()

    fun loadState(state: Map<String, Any?>) = signals.loadState(state)

    /** One step's signal of every unit with an active rank. */
    fun observe(grads: Map<String, FloatArray>, ranks: Ranks) {
        for ((unit, n) in Units.fromRanks(ranks, policy.units.keys)) {
            if (n == 0) continue
            val down = tensor(unit, Contract.ROLE_DOWN)
            val up = tensor(unit, Contract.ROLE_UP)
            val rMax = down.shape[0].toInt()
            fun grad(t: Trainable) = grads[t.name]
                ?: throw ConfigError("the trainer gave no gradient for ${t.name} (unit $unit); on-device re-allocation needs every slot's down and up gradients.")
            signals.observe(unit, Realloc.rankSignal(grad(down), grad(up), rMax, BooleanArray(rMax) { it < n }))
        }
    }

    fun due(step: Int): Boolean = policy.due(step)

    fun decide(step: Int, ranks: Ranks): Decision = policy.decide(step, Units.fromRanks(ranks, policy.units.keys), signals.signals())

    /** Fresh LoRA init of the newly activated rows/columns of [params] (in place); the new ranks by module. */
    fun grow(params: Map<String, FloatArray>, decision: Decision): Ranks {
        val rng = NumpyRandom.of(seed, decision.step.toLong())
        for ((unit, ab) in decision.changed()) {
            val (a, b) = ab
            if (b <= a) continue
            val downT = tensor(unit, Contract.ROLE_DOWN)
            val upT = tensor(unit, Contract.ROLE_UP)
            val down = params[downT.name] ?: throw ConfigError("the trainer has no tensor ${downT.name} to grow")
            val up = params[upT.name] ?: throw ConfigError("the trainer has no tensor ${upT.name} to grow")
            val fanIn = downT.shape[1].toInt()
            growInit(rng, b - a, fanIn).copyInto(down, a * fanIn)
            val rMax = upT.shape[1].toInt()
            for (o in 0 until upT.shape[0].toInt()) for (c in a until b) up[o * rMax + c] = 0f
        }
        return Units.toRanks(decision.ranks)
    }

    private fun tensor(unit: String, role: String): Trainable =
        pairs[unit]?.get(role) ?: throw ConfigError("the manifest has no $role tensor for unit $unit; on-device re-allocation needs both roles of every slot.")

    companion object {
        /** `grow_init`: `[rows, fanIn]` uniform in `±1/sqrt(fanIn)` (doubles, then float32), row-major. */
        fun growInit(rng: NumpyRandom, rows: Int, fanIn: Int): FloatArray {
            val bound = 1.0 / Math.sqrt(fanIn.toDouble())
            return FloatArray(rows * fanIn) { rng.uniform(-bound, bound).toFloat() }
        }
    }
}
