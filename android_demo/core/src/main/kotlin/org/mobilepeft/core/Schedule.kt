package org.mobilepeft.core

/**
 * The bundle's rank schedule (mobile_peft/core/schedule.py): per adapted module and rank slot the
 * maximum rank, the cost of one rank and the branch scale; the active rank of each phase (a step
 * range); the graphs' mask inputs in order. Ranks reach the graphs as masks, so changing phase
 * never changes a shape: the phone feeds [phaseMasks] (or [inputMasks] after a re-allocation).
 *
 * [RankSchedule.read] mirrors `RankSchedule.from_dict` + `problems()`: the same checks, in the
 * same order, with the same messages.
 */
object ScheduleFormat {
    const val SCHEMA = "mobile-peft/rank-schedule"
    const val VERSION = 1
    const val BUDGET_TOLERANCE = 0.01
}

/** `rank_schedule.modules[m].slots[s]`; [scale] is `alpha / r_max` (absent in plans). */
data class SlotInfo(val rMax: Int, val paramsPerRank: Long, val scale: Double?)

/** module -> slot -> active rank. */
typealias Ranks = Map<String, Map<String, Int>>

class Phase(
    val startStep: Int,
    val ranks: Ranks,
    /** Optional soft masks (ARD-LoRA), module -> slot -> values; absent slots use the prefix mask. */
    val masks: Map<String, Map<String, FloatArray>> = emptyMap(),
)

/** One rank-mask input of the graphs, in graph-input order; its name follows the contract's rule. */
data class MaskInput(val module: String, val slot: String, val rMax: Int) {
    val input: String get() = Contract.maskInputName(module, slot)
}

/** An allocation unit (`path::slot`) as the performance model sees it. */
data class UnitInfo(val rMax: Int, val paramsPerRank: Long)

/** The hard mask of [rank] active ranks out of [rMax]: `[1]*rank + [0]*(rMax - rank)`. */
fun prefixMask(rank: Int, rMax: Int): FloatArray = FloatArray(rMax) { if (it < rank) 1f else 0f }

class RankSchedule(
    val allocator: String,
    val adapter: String,
    val budgetParams: Long,
    val modules: Map<String, Map<String, SlotInfo>>,
    val phases: List<Phase>,
    val maskInputs: List<MaskInput>,
    val dropout: Double,
    /** The fitted performance model (hydra-rank bundles), a JSON object; null otherwise. */
    val performanceModel: Map<String, Any?>? = null,
) {
    /** Index of the phase active at [step]: the last one starting at or before it. */
    fun phaseIndex(step: Int): Int {
        var index = 0
        phases.forEachIndexed { i, p -> if (p.startStep <= step) index = i }
        return index
    }

    fun phaseAt(step: Int): Phase = phases[phaseIndex(step)]

    /** Mask values of [module]'s [slot] in [phase]: its soft values, else the prefix mask of its rank. */
    fun mask(phase: Phase, module: String, slot: String): FloatArray {
        phase.masks[module]?.get(slot)?.let { return it.copyOf() }
        val rank = phase.ranks[module]?.get(slot)
            ?: throw ConfigError("the phase starting at step ${phase.startStep} gives no rank for $module.$slot")
        return prefixMask(rank, slot(module, slot).rMax)
    }

    /** One `[r_max]` mask per graph input ([maskInputs] order) for [ranks] (and [soft] values where given). */
    fun inputMasks(ranks: Ranks, soft: Map<String, Map<String, FloatArray>> = emptyMap()): List<FloatArray> {
        val phase = Phase(0, ranks, soft)
        return maskInputs.map { mask(phase, it.module, it.slot) }
    }

    fun phaseMasks(index: Int): List<FloatArray> = phases[index].let { inputMasks(it.ranks, it.masks) }

    fun ranks(index: Int): Ranks = phases[index].ranks

    /** Trainable numbers active at [ranks]: sum of rank x params_per_rank. */
    fun params(ranks: Ranks): Long =
        ranks.entries.sumOf { (m, slots) -> slots.entries.sumOf { (s, r) -> r * slot(m, s).paramsPerRank } }

    /** Allocation units (`path::slot`) with `r_max > 0`, in schedule order. */
    fun units(): LinkedHashMap<String, UnitInfo> {
        val out = LinkedHashMap<String, UnitInfo>()
        for ((m, slots) in modules) for ((s, info) in slots) {
            if (info.rMax > 0) out[Units.key(m, s)] = UnitInfo(info.rMax, info.paramsPerRank)
        }
        return out
    }

    /** Whether every slot records its branch scale (needed to write the personal adapter). */
    val hasScales: Boolean get() = modules.values.all { slots -> slots.values.all { it.scale != null } }

    fun scale(module: String, slot: String): Double = slot(module, slot).scale ?: throw ConfigError(
        "${Contract.Key.RANK_SCHEDULE}.${Contract.ScheduleKey.MODULES}[${Py.repr(module)}].${Contract.ScheduleKey.SLOTS}[${Py.repr(slot)}] " +
            "has no '${Contract.SlotKey.SCALE}' (alpha / r_max); re-export the bundle with a mobile-peft that records adapter scales.",
    )

    fun slot(module: String, slot: String): SlotInfo =
        modules[module]?.get(slot) ?: throw ConfigError("the rank schedule has no slot $module.$slot")

    companion object {
        /**
         * Parse and validate a schedule JSON object (`RankSchedule.from_dict`); every problem is
         * reported in one [ConfigError] whose message is Python's ("invalid <where>:\n  - ...").
         */
        fun read(d: Any?, where: String = "rank schedule"): RankSchedule = ScheduleReader(where).read(d)
    }
}

/**
 * `from_dict`: the schema and required keys, then the type of every field (`_structure_problems`),
 * then `problems()`; each stage reports all it finds, with Python's messages.
 */
private class ScheduleReader(private val where: String) {
    private class RawPhase(val startStep: Long, val ranks: Map<String, Map<String, Long>>, val masks: Map<String, Map<String, FloatArray>>)

    private fun fail(problems: List<String>): Nothing = throw ConfigError("invalid $where:\n  - " + problems.joinToString("\n  - "))

    private fun isInt(v: Any?) = v is Long
    private fun isNumber(v: Any?) = v is Long || (v is Double && v.isFinite())

    fun read(d: Any?): RankSchedule {
        if (d !is Map<*, *>) throw ConfigError("invalid $where: expected a JSON object, got ${Py.typeName(d)}.")
        val first = mutableListOf<String>()
        if (d[Contract.ScheduleKey.SCHEMA] != ScheduleFormat.SCHEMA) first += "schema is ${Py.repr(d[Contract.ScheduleKey.SCHEMA])}; expected ${Py.repr(ScheduleFormat.SCHEMA)}"
        if (!Py.equal(d[Contract.ScheduleKey.VERSION], ScheduleFormat.VERSION.toLong())) {
            first += "version is ${Py.repr(d[Contract.ScheduleKey.VERSION])}; this mobile-peft reads version ${ScheduleFormat.VERSION}"
        }
        first += Contract.RANK_SCHEDULE_KEYS.filterNot(d::containsKey).map { "missing key ${Py.repr(it)}" }
        if (first.isNotEmpty()) fail(first)
        val structure = structureProblems(d)
        if (structure.isNotEmpty()) fail(structure.take(20))

        val modules = LinkedHashMap<String, Map<String, SlotInfo>>()
        for ((m, v) in d[Contract.ScheduleKey.MODULES] as Map<*, *>) {
            val slots = LinkedHashMap<String, SlotInfo>()
            for ((s, info) in (v as Map<*, *>)[Contract.ScheduleKey.SLOTS] as Map<*, *>) {
                val i = info as Map<*, *>
                slots[s.toString()] = SlotInfo((i[Contract.SlotKey.R_MAX] as Long).toInt(), i[Contract.SlotKey.PARAMS_PER_RANK] as Long, (i[Contract.SlotKey.SCALE] as? Number)?.toDouble())
            }
            modules[m.toString()] = slots
        }
        val phases = (d[Contract.ScheduleKey.PHASES] as List<*>).map { p ->
            val po = p as Map<*, *>
            RawPhase(
                po[Contract.PhaseKey.START_STEP] as Long,
                (po[Contract.PhaseKey.RANKS] as Map<*, *>).entries.associate { (m, r) ->
                    m.toString() to (r as Map<*, *>).entries.associate { (s, x) -> s.toString() to x as Long }
                },
                (po[Contract.PhaseKey.MASKS].takeIf(Py::truthy) as? Map<*, *>).orEmpty().entries.associate { (m, slots) ->
                    m.toString() to (slots as Map<*, *>).entries.associate { (s, v) ->
                        s.toString() to (v as List<*>).let { l -> FloatArray(l.size) { (l[it] as Number).toFloat() } }
                    }
                },
            )
        }
        val maskInputs = ((d[Contract.ScheduleKey.MASK_INPUTS].takeIf(Py::truthy) as? List<*>) ?: emptyList<Any?>()).map { e ->
            val eo = e as Map<*, *>
            MaskInput(eo[Contract.MaskInputKey.MODULE] as String, eo[Contract.MaskInputKey.SLOT] as String, (eo[Contract.MaskInputKey.R_MAX] as Long).toInt())
        }
        val budget = d[Contract.ScheduleKey.BUDGET_PARAMS] as Long
        val dropout = d[Contract.ScheduleKey.DROPOUT].let { if (Py.truthy(it)) (it as Number).toDouble() else 0.0 }
        val problems = problems(modules, phases, maskInputs, budget)
        if (problems.isNotEmpty()) fail(problems)
        @Suppress("UNCHECKED_CAST")
        return RankSchedule(
            allocator = d[Contract.ScheduleKey.ALLOCATOR] as String,
            adapter = d[Contract.ScheduleKey.ADAPTER] as String,
            budgetParams = budget,
            modules = modules,
            phases = phases.map { p -> Phase(p.startStep.toInt(), p.ranks.mapValues { (_, s) -> s.mapValues { (_, r) -> r.toInt() } }, p.masks) },
            maskInputs = maskInputs,
            dropout = dropout,
            performanceModel = d[Contract.ScheduleKey.PERFORMANCE_MODEL] as? Map<String, Any?>,
        )
    }

    /** `_structure_problems`: the types of every field the schedule is built from (untrusted data). */
    private fun structureProblems(d: Map<*, *>): List<String> {
        val out = mutableListOf<String>()
        if (d[Contract.ScheduleKey.ALLOCATOR] !is String || d[Contract.ScheduleKey.ADAPTER] !is String) out += "allocator and adapter must be strings"
        val budget = d[Contract.ScheduleKey.BUDGET_PARAMS]
        if (!isInt(budget) || (budget as Long) < 0) out += "budget_params is ${Py.repr(budget)}; expected a whole number >= 0"
        if (d.containsKey(Contract.ScheduleKey.DROPOUT)) {
            val p = d[Contract.ScheduleKey.DROPOUT]
            if (!(isNumber(p) && (p as Number).toDouble() >= 0 && p.toDouble() < 1)) out += "dropout is ${Py.repr(p)}; expected a probability in [0, 1)"
        }
        val modules = d[Contract.ScheduleKey.MODULES] as? Map<*, *> ?: return out + "modules is a ${Py.typeName(d[Contract.ScheduleKey.MODULES])}, expected an object"
        for ((m, v) in modules) {
            val slots = (v as? Map<*, *>)?.get(Contract.ScheduleKey.SLOTS) as? Map<*, *>
            if (slots == null) {
                out += "modules[${Py.repr(m)}] has no slots object"
                continue
            }
            for ((slot, info) in slots) {
                val at = "modules[${Py.repr(m)}].slots[${Py.repr(slot)}]"
                when {
                    info !is Map<*, *> || !info.containsKey(Contract.SlotKey.R_MAX) || !info.containsKey(Contract.SlotKey.PARAMS_PER_RANK) ->
                        out += "$at needs r_max and params_per_rank"
                    !(isInt(info[Contract.SlotKey.R_MAX]) && (info[Contract.SlotKey.R_MAX] as Long) >= 0 && isInt(info[Contract.SlotKey.PARAMS_PER_RANK]) && (info[Contract.SlotKey.PARAMS_PER_RANK] as Long) >= 0) ->
                        out += "$at r_max/params_per_rank must be whole numbers >= 0"
                    info.containsKey(Contract.SlotKey.SCALE) && !isNumber(info[Contract.SlotKey.SCALE]) -> out += "$at.scale is ${Py.repr(info[Contract.SlotKey.SCALE])}; expected a finite number"
                }
            }
        }
        val phases = d[Contract.ScheduleKey.PHASES] as? List<*> ?: return out + "phases is a ${Py.typeName(d[Contract.ScheduleKey.PHASES])}, expected a list"
        for ((i, phase) in phases.withIndex()) {
            if (phase !is Map<*, *> || !Contract.PHASE_KEYS.all(phase::containsKey) ||
                !isInt(phase[Contract.PhaseKey.START_STEP]) || phase[Contract.PhaseKey.RANKS] !is Map<*, *>
            ) {
                out += "phases[$i] needs a whole-number start_step and a ranks object"
                continue
            }
            for ((m, ranks) in phase[Contract.PhaseKey.RANKS] as Map<*, *>) {
                if (ranks !is Map<*, *> || !ranks.all { (s, r) -> s is String && isInt(r) }) {
                    out += "phases[$i].ranks[${Py.repr(m)}] must map slot names to whole numbers"
                }
            }
            val masks = if (phase.containsKey(Contract.PhaseKey.MASKS)) phase[Contract.PhaseKey.MASKS] else emptyMap<Any?, Any?>()
            val ok = masks is Map<*, *> && masks.values.all { slots ->
                slots is Map<*, *> && slots.values.all { v -> v is List<*> && v.all(::isNumber) }
            }
            if (!ok) out += "phases[$i].masks must map module -> slot -> a list of finite numbers"
        }
        val entries = if (d.containsKey(Contract.ScheduleKey.MASK_INPUTS)) d[Contract.ScheduleKey.MASK_INPUTS] else emptyList<Any?>()
        if (entries !is List<*>) return out + "mask_inputs is a ${Py.typeName(entries)}, expected a list"
        for ((j, e) in entries.withIndex()) {
            if (!(e is Map<*, *> && e[Contract.MaskInputKey.MODULE] is String && e[Contract.MaskInputKey.SLOT] is String && isInt(e[Contract.MaskInputKey.R_MAX]))) {
                out += "mask_inputs[$j] needs module, slot (strings) and r_max (a whole number)"
            } else {
                val name = Contract.maskInputName(e[Contract.MaskInputKey.MODULE] as String, e[Contract.MaskInputKey.SLOT] as String)
                if (e[Contract.MaskInputKey.INPUT] != name) {
                    out += "mask_inputs[$j].input is ${Py.repr(e[Contract.MaskInputKey.INPUT])}; expected ${Py.repr(name)} (the graph input's name)"
                }
            }
        }
        return out
    }

    /** `RankSchedule.problems()`, message for message. */
    private fun problems(
        modules: Map<String, Map<String, SlotInfo>>,
        phases: List<RawPhase>,
        maskInputs: List<MaskInput>,
        budget: Long,
    ): List<String> {
        val out = mutableListOf<String>()
        if (phases.isEmpty()) {
            out += "no phases: a schedule needs at least one phase starting at step 0"
        } else if (phases[0].startStep != 0L) {
            out += "first phase starts at step ${phases[0].startStep}; it must start at 0"
        }
        val starts = phases.map { it.startStep }
        if (starts != starts.toSortedSet().toList()) out += "phase start steps ${Py.repr(starts)} are not strictly increasing"
        for ((i, phase) in phases.withIndex()) {
            val unknown = phase.ranks.keys.filterNot(modules::containsKey).sortedWith(Py.STRING_ORDER)
            if (unknown.isNotEmpty()) out += "phase $i names unknown modules ${Py.repr(unknown.take(3))}"
            val missing = modules.keys.filterNot(phase.ranks::containsKey).sortedWith(Py.STRING_ORDER)
            if (missing.isNotEmpty()) out += "phase $i gives no rank for modules ${Py.repr(missing.take(3))}"
            var badRank = false
            for ((module, slots) in phase.ranks) for ((slot, rank) in slots) {
                val info = modules[module]?.get(slot)
                if (info == null) {
                    if (module in modules) {
                        out += "phase $i: module ${Py.repr(module)} has no slot ${Py.repr(slot)}"
                        badRank = true
                    }
                    continue
                }
                if (rank < 0 || rank > info.rMax) {
                    out += "phase $i: rank $rank of $module.$slot is outside 0..r_max=${info.rMax}"
                    badRank = true
                }
                val mask = phase.masks[module]?.get(slot)
                if (mask != null && mask.size != info.rMax) {
                    out += "phase $i: mask of $module.$slot has ${mask.size} values; r_max is ${info.rMax}"
                }
            }
            if (unknown.isEmpty() && !badRank) {
                val used = phase.ranks.entries.sumOf { (m, s) -> s.entries.sumOf { (k, r) -> r * modules.getValue(m).getValue(k).paramsPerRank } }
                if (used > budget * (1 + ScheduleFormat.BUDGET_TOLERANCE)) {
                    out += "phase $i uses ${Py.grouped(used)} trainable parameters, over the budget of ${Py.grouped(budget)} (+1%)"
                }
            }
        }
        for ((j, entry) in maskInputs.withIndex()) {
            val info = modules[entry.module]?.get(entry.slot)
            if (info == null) {
                out += "mask_inputs[$j] names ${entry.module}.${entry.slot}, which the schedule does not have"
            } else if (info.rMax != entry.rMax) {
                out += "mask_inputs[$j] (${entry.module}.${entry.slot}) has r_max ${entry.rMax}; the module has ${info.rMax}"
            }
        }
        return out
    }
}
