package org.mobilepeft.core

/**
 * The typed reading of a manifest that [manifestProblems] found sound (so every value has the
 * type the SDK checks), plus what a phone relies on that the SDK guarantees by writing it
 * itself: every phase gives a rank (or a soft mask) to every mask input's slot, the
 * trainable tensors are float32 (what this app's trainers copy in and out), and labels use the
 * contract's ignore index (the graphs were exported with it).
 */
internal class ManifestReader(private val d: Map<*, *>, private val problems: MutableList<String>) {
    fun read(): Manifest? {
        val spec = BundleInputSpec.read(d[Contract.Key.INPUT_SPEC] as Map<*, *>)
        val trainable = (d[Contract.Key.TRAINABLE] as List<*>).map { e ->
            val o = e as Map<*, *>
            Trainable(
                o[Contract.TrainableKey.NAME] as String, o[Contract.TrainableKey.MODULE] as String, o[Contract.TrainableKey.SLOT] as String, o[Contract.TrainableKey.ROLE] as String,
                o[Contract.TrainableKey.PARAM] as String, (o[Contract.TrainableKey.SHAPE] as List<*>).map { it as Long }, o[Contract.TrainableKey.DTYPE] as String,
            )
        }
        @Suppress("UNCHECKED_CAST")
        val performanceModel = d[Contract.Key.PERFORMANCE_MODEL] as Map<String, Any?>?
        val parsed = RankSchedule.read(d[Contract.Key.RANK_SCHEDULE], where = Contract.Key.RANK_SCHEDULE)
        // A bundle's schedule carries its performance model at the top level (as Manifest.from_dict).
        val schedule = RankSchedule(
            parsed.allocator, parsed.adapter, parsed.budgetParams, parsed.modules, parsed.phases,
            parsed.maskInputs, parsed.dropout, performanceModel,
        )
        trainable.forEachIndexed { i, t ->
            if (t.dtype != DTYPE_FLOAT32) problems += "${Contract.Key.TRAINABLE}[$i].${Contract.TrainableKey.DTYPE} is ${Py.repr(t.dtype)}; this app trains $DTYPE_FLOAT32 adapter tensors only"
        }
        if (spec.tokenIds.ignoreIndex != Contract.IGNORE_INDEX) {
            problems += "${Contract.Key.INPUT_SPEC}.${Contract.InputSpecKey.TOKEN_IDS}.${Contract.TokenIdKey.IGNORE_INDEX} is ${spec.tokenIds.ignoreIndex}; " +
                "the graphs score labels against ${Contract.IGNORE_INDEX}, re-export the bundle"
        }
        checkMasks(schedule)
        val files = (d[Contract.Key.FILES] as List<*>).map { e ->
            val o = e as Map<*, *>
            FileEntry(o[Contract.FileKey.PATH] as String, o[Contract.FileKey.SHA256] as String, o[Contract.FileKey.SIZE] as Long)
        }
        val opt = d[Contract.Key.OPTIMIZER] as Map<*, *>
        @Suppress("UNCHECKED_CAST")
        val optimizer = OptimizerSpec(opt[Contract.OptimizerKey.NAME] as String, (opt[Contract.OptimizerKey.LR] as Number).toDouble(), opt as Map<String, Any?>)
        if (problems.isNotEmpty()) return null
        @Suppress("UNCHECKED_CAST")
        return Manifest(
            format = d[Contract.Key.FORMAT] as String,
            sdkVersion = d[Contract.Key.SDK_VERSION] as String,
            model = d[Contract.Key.MODEL] as Map<String, Any?>,
            inputSpec = spec,
            methods = d[Contract.Key.METHODS] as Map<String, Any?>,
            trainable = trainable,
            schedule = schedule,
            performanceModel = performanceModel,
            optimizer = optimizer,
            backbone = d[Contract.Key.BACKBONE] as Map<String, Any?>,
            files = files,
            raw = d as Map<String, Any?>,
        )
    }

    /** Every phase gives each mask input's slot a rank or a soft mask (the SDK checks modules, not slots). */
    private fun checkMasks(schedule: RankSchedule) {
        schedule.maskInputs.forEachIndexed { j, m ->
            schedule.phases.forEachIndexed { i, p ->
                if (p.masks[m.module]?.get(m.slot) == null && p.ranks[m.module]?.get(m.slot) == null) {
                    problems += "${Contract.Key.RANK_SCHEDULE}.${Contract.ScheduleKey.PHASES}[$i] gives no rank for ${m.module}.${m.slot} (mask input $j)"
                }
            }
        }
    }

    companion object {
        const val DTYPE_FLOAT32 = "float32"
    }
}
