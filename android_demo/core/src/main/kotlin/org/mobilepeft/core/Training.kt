package org.mobilepeft.core

import java.io.File

/**
 * What the training loop needs from a runtime (the app's ExecuTorch and ONNX Runtime engines;
 * a fake in the tests). Inputs are the contract's, in order: pixel_values, input_ids, labels, then
 * one rank mask per `rank_schedule.mask_inputs` entry.
 */
interface Trainer : AutoCloseable {
    /** Forward and backward of [batch] with [masks]; the loss. The gradients wait for [applyStep] or [discardStep]. */
    fun forwardBackward(batch: Batch, masks: List<FloatArray>): Float

    /** The optimiser step with the pending gradients. */
    fun applyStep()

    /** Drop the pending gradients, weights untouched (the loss or a gradient was NaN or infinite). */
    fun discardStep()

    /** Whether every pending gradient is finite (a runtime that cannot read its gradients says true). */
    fun gradientsFinite(): Boolean = true

    /** Write what resumes this trainer (weights, optimiser state) into [dir], an empty directory. */
    fun save(dir: File)

    /** Loss and logits `[B, T, V]` of the eval graph at the current weights. */
    fun evaluate(batch: Batch, masks: List<FloatArray>): Pair<Float, FloatArray> =
        throw UnsupportedOperationException("${this::class.java.simpleName} has no eval method")

    /** The current trainable tensors by manifest name (for the personal adapter). */
    fun parameters(): Map<String, FloatArray>

    /** The pending gradients by manifest name (on-device re-allocation reads every active slot's down and up). */
    fun gradients(): Map<String, FloatArray> =
        throw UnsupportedOperationException("${this::class.java.simpleName} cannot read its gradients; on-device re-allocation needs them")

    /** Write [values] (tensors by manifest name) into the trainable weights (re-allocation's grown ranks). */
    fun setParameters(values: Map<String, FloatArray>): Unit =
        throw UnsupportedOperationException("${this::class.java.simpleName} cannot write its parameters; on-device re-allocation needs it")
}

/** A held-out split for accuracy before and after training: [count] examples, a batch of any indices. */
class EvalSet(val count: Int, val batchOf: (IntArray) -> Batch, val ignoreIndex: Int = Contract.IGNORE_INDEX)

/** Opens a [Trainer]: fresh (`null`) or resumed from a checkpoint directory its [Trainer.save] wrote. */
fun interface TrainerFactory {
    fun open(resumeFrom: File?): Trainer
}

data class TrainOptions(
    /** Optimiser steps in total, counting resumed ones. */
    val steps: Int,
    val checkpointEvery: Int = 10,
    /** Seed of the data order (as the SDK's `--seed`). */
    val seed: Long = 0,
    /** Steps with a non-finite loss or gradient tolerated (not applied) before the run stops. */
    val maxBadSteps: Int = 5,
    /** Re-allocate ranks on the device with the bundle's performance model (hydra-rank bundles). */
    val onDeviceRealloc: Boolean = false,
    /** Steps between re-allocation points; default a third of the run (as the SDK's `realloc_every`). */
    val reallocEvery: Int? = null,
) {
    init {
        if (steps < 1) throw ConfigError("steps=$steps; expected >= 1.")
        if (checkpointEvery < 1) throw ConfigError("checkpoint_every=$checkpointEvery; expected >= 1.")
        if (maxBadSteps < 0) throw ConfigError("max_bad_steps=$maxBadSteps; expected >= 0.")
        if (reallocEvery != null && reallocEvery < 0) throw ConfigError("realloc_every=$reallocEvery; expected >= 0 (0 turns it off).")
    }
}

enum class StopReason { COMPLETED, CANCELLED }

class TrainResult(
    val step: Int,
    val losses: List<Float>,
    /** Steps whose loss or gradients were not finite (not applied), over the whole run including resumed parts. */
    val badSteps: Int,
    val stop: StopReason,
    val resumedFrom: Int?,
    val checkpoint: File?,
    /** The masks of the last step (what the personal adapter is written at). */
    val masks: List<FloatArray>,
    /** The trained tensors at the end, by manifest name (empty when the runtime cannot read them). */
    val parameters: Map<String, FloatArray>,
    /** The re-allocation events of the whole run (`{"step": s, **Decision.event(budget)}`, as the SDK logs them). */
    val events: List<Map<String, Any?>> = emptyList(),
    /** The ranks of the last step. */
    val ranks: Ranks = emptyMap(),
    /** Accuracy on the [EvalSet] at the run's start (read back from the checkpoint when resumed). */
    val evalBefore: Evaluate.Report? = null,
    /** Accuracy on the [EvalSet] at the end of a completed run. */
    val evalAfter: Evaluate.Report? = null,
)

interface TrainListener {
    fun onStep(step: Int, loss: Float) {}
    fun onBadStep(step: Int, loss: Float, badSteps: Int) {}
    fun onPhase(step: Int, phase: Int) {}
    fun onCheckpoint(step: Int, dir: File) {}
    fun onRealloc(step: Int, event: Map<String, Any?>) {}

    /** Accuracy on the [EvalSet]: before training (step 0; on resume the report read back from the checkpoint) and after the last step. */
    fun onEval(step: Int, report: Evaluate.Report) {}
}

/**
 * The on-device training loop, as runtime/trainer.py `train_bundle` runs it:
 *
 * * per step: the next batch of the seeded [DataStream] (the reference runtime's order) with the
 *   masks of the phase active at the step, `forwardBackward`, then `applyStep`;
 * * a step whose loss or gradients are not finite is not applied (`discardStep`), but it is a step:
 *   its batch is consumed, its loss recorded, the step counted; when more than
 *   [TrainOptions.maxBadSteps] steps were bad the run stops with a [DivergedError], the last good
 *   checkpoint intact; a checkpoint is never written from non-finite weights;
 * * [cancelled] is checked before every step; a cancelled run checkpoints what it has;
 * * a checkpoint every [TrainOptions.checkpointEvery] steps and at the end; [run] with `resume`
 *   continues from the newest one with the same data position, phase, masks, losses and counters,
 *   so a resumed run sees the batches an uninterrupted one would;
 * * with [TrainOptions.onDeviceRealloc] ([Reallocator]): every applied step observes the gradients
 *   of the active ranks; before a due step the shipped performance model decides, grown ranks are
 *   initialised (`Trainer.parameters` -> grow -> `Trainer.setParameters`) and the masks follow the
 *   new ranks; every decision is logged; the signals are checkpointed and restored;
 * * with an [EvalSet]: accuracy before the first step and after the last
 *   (runtime/evaluate.py's padded batches of [batchSize]).
 *
 * [bundleId] names the bundle a checkpoint belongs to (e.g. the sha256 of its manifest): resuming
 * another bundle's checkpoint is refused.
 */
class TrainingLoop(
    private val schedule: RankSchedule,
    private val bundleId: String,
    private val examples: Int,
    private val batchSize: Int,
    private val batchOf: (IntArray) -> Batch,
    private val options: TrainOptions,
    private val store: CheckpointStore,
    private val factory: TrainerFactory,
    private val cancelled: () -> Boolean = { false },
    private val listener: TrainListener = object : TrainListener {},
    /** The manifest's trainable tensors (their roles find each slot's down/up for re-allocation). */
    private val trainable: List<Trainable> = emptyList(),
    private val evalSet: EvalSet? = null,
) {
    private var step = 0
    private var phase = 0
    private var masks: List<FloatArray> = schedule.phaseMasks(0)
    private val losses = ArrayList<Float>()
    private var badSteps = 0
    private var ranks: Ranks = schedule.ranks(0)
    private val events = ArrayList<Map<String, Any?>>()
    private var evalBefore: Evaluate.Report? = null
    private val reallocator: Reallocator? = if (!options.onDeviceRealloc) null else Reallocator(
        schedule, schedule.performanceModel, trainable, options.reallocEvery ?: maxOf(1, options.steps / 3), options.steps, options.seed,
    )
    private val stream = DataStream(examples, batchSize, StreamPosition(seed = options.seed))

    fun run(resume: Boolean = true): TrainResult {
        val last = store.latest()
        if (last != null && !resume) {
            throw CheckpointError("${store.runDir} already holds checkpoints; resume, or choose a new run directory.")
        }
        val from = if (resume) last else null
        if (from != null) restore(store.meta(from), from)
        val resumedFrom = if (from != null) step else null
        var saved: File? = from
        var savedStep = if (from != null) step else -1
        var stop = StopReason.COMPLETED
        var parameters: Map<String, FloatArray> = emptyMap()
        var evalAfter: Evaluate.Report? = null
        factory.open(from).use { trainer ->
            if (evalSet != null && from == null) evalBefore = evaluate(trainer, evalSet)
            evalBefore?.let { listener.onEval(0, it) }
            while (step < options.steps) {
                if (cancelled()) {
                    stop = StopReason.CANCELLED
                    break
                }
                val p = schedule.phaseIndex(step)
                if (p != phase) {
                    phase = p
                    masks = schedule.phaseMasks(p)
                    ranks = schedule.ranks(p)
                    listener.onPhase(step, p)
                }
                if (reallocator != null && reallocator.due(step)) reallocate(trainer, reallocator)
                val loss = trainer.forwardBackward(batchOf(stream.next()), masks)
                if (!loss.isFinite() || !trainer.gradientsFinite()) {
                    // Not applied: the weights stay those of the last good step (and so do checkpoints).
                    trainer.discardStep()
                    badSteps += 1
                    listener.onBadStep(step + 1, loss, badSteps)
                    if (badSteps > options.maxBadSteps) {
                        throw DivergedError(
                            "$badSteps training steps had a non-finite loss or gradient (the last at step ${step + 1}; " +
                                "maxBadSteps is ${options.maxBadSteps}); none was applied and the last good checkpoint " +
                                "${store.latest()} is intact. Lower the learning rate or check the data.",
                        )
                    }
                } else {
                    reallocator?.observe(trainer.gradients(), ranks)
                    trainer.applyStep()
                }
                step += 1
                losses += loss
                listener.onStep(step, loss)
                if (step % options.checkpointEvery == 0 || step == options.steps) {
                    saved = save(trainer)
                    savedStep = step
                }
            }
            if (step > 0 && (savedStep != step || saved == null)) saved = save(trainer)
            parameters = trainer.parameters()
            if (evalSet != null && stop == StopReason.COMPLETED) evalAfter = evaluate(trainer, evalSet)
            evalAfter?.let { listener.onEval(step, it) }
        }
        return TrainResult(
            step, losses.toList(), badSteps, stop, resumedFrom, saved, masks.map { it.copyOf() }, parameters,
            events.toList(), ranks, evalBefore, evalAfter,
        )
    }

    private fun reallocate(trainer: Trainer, reallocator: Reallocator) {
        val decision = reallocator.decide(step, ranks)
        if (decision.applied) {
            val params = trainer.parameters()
            ranks = reallocator.grow(params, decision)
            trainer.setParameters(params)
            masks = schedule.inputMasks(ranks)
        }
        val event = linkedMapOf<String, Any?>("step" to step).apply { putAll(decision.event(reallocator.budget)) }
        events += event
        listener.onRealloc(step, event)
    }

    private fun evaluate(trainer: Trainer, set: EvalSet): Evaluate.Report =
        Evaluate.run(trainer, set.count, batchSize, set.ignoreIndex, masks, set.batchOf)

    private fun save(trainer: Trainer): File {
        val bad = trainer.parameters().filterValues { v -> v.any { !it.isFinite() } }.keys.sorted()
        if (bad.isNotEmpty()) { // never replace the last good checkpoint with a broken state
            throw DivergedError(
                "at step $step the trained tensors are not finite (${Py.repr(bad.take(3))}); the checkpoint was not written, " +
                    "the last good one is ${store.latest()}. Lower the learning rate and resume or restart.",
            )
        }
        val meta = linkedMapOf<String, Any?>(
            BUNDLE to bundleId,
            EXAMPLES to examples,
            PHASE to phase,
            MASKS to masks.map { it.toList() },
            POSITION to stream.position.toJson(),
            LOSSES to losses.map { it.toDouble() },
            BAD_STEPS to badSteps,
            RANKS to ranks,
            EVENTS to events,
            REALLOC to reallocator?.state(),
            EVAL_BEFORE to evalBefore?.let { linkedMapOf(EVAL_ACCURACY to it.accuracy, EVAL_LOSS to it.loss, EVAL_EXAMPLES to it.examples) },
        )
        val dir = store.save(step, meta) { trainer.save(it) }
        listener.onCheckpoint(step, dir)
        return dir
    }

    private fun restore(meta: Map<*, *>, dir: File) {
        if (meta[BUNDLE] != bundleId) {
            throw CheckpointError("checkpoint $dir belongs to bundle ${Py.repr(meta[BUNDLE])}, not ${Py.repr(bundleId)}; use a new run directory for this bundle.")
        }
        val position = StreamPosition.fromJson(meta[POSITION] as? Map<*, *> ?: throw CheckpointError("checkpoint $dir has no data position"))
        if (position.seed != options.seed || Py.toInt(meta[EXAMPLES]) != examples.toLong()) {
            throw CheckpointError(
                "checkpoint $dir trained on ${meta[EXAMPLES]} examples with seed ${position.seed}; resume with the same data " +
                    "and seed (${examples} examples, seed ${options.seed} now), or use a new run directory.",
            )
        }
        step = Py.toInt(meta[CheckpointStore.STEP]).toInt()
        phase = Py.toInt(meta[PHASE]).toInt()
        masks = (meta[MASKS] as List<*>).map { m -> (m as List<*>).let { l -> FloatArray(l.size) { Py.toFloat(l[it]).toFloat() } } }
        stream.position = position
        losses.clear()
        (meta[LOSSES] as List<*>).forEach { losses += Py.toFloat(it).toFloat() }
        badSteps = Py.toInt(meta[BAD_STEPS]).toInt()
        // Checkpoints written before re-allocation existed hold no ranks: the phase's.
        ranks = (meta[RANKS] as? Map<*, *>)?.entries?.associate { (m, slots) ->
            m as String to (slots as Map<*, *>).entries.associate { (s, r) -> s as String to Py.toInt(r).toInt() }
        } ?: schedule.ranks(phase)
        events.clear()
        (meta[EVENTS] as? List<*>)?.forEach { e -> events += (e as Map<*, *>).entries.associate { (k, v) -> k as String to v } }
        @Suppress("UNCHECKED_CAST")
        (meta[REALLOC] as? Map<String, Any?>)?.let { reallocator?.loadState(it) }
        evalBefore = (meta[EVAL_BEFORE] as? Map<*, *>)?.let {
            Evaluate.Report(Py.toFloat(it[EVAL_ACCURACY]), Py.toFloat(it[EVAL_LOSS]), Py.toInt(it[EVAL_EXAMPLES]).toInt())
        }
    }

    companion object {
        // meta.json keys of the loop's own state (not bundle contract keys).
        const val BUNDLE = "bundle"
        const val EXAMPLES = "examples"
        const val PHASE = "phase"
        const val MASKS = "rank_masks"
        const val POSITION = "position"
        const val LOSSES = "losses"
        const val BAD_STEPS = "bad_steps"
        const val RANKS = "active_ranks"
        const val EVENTS = "events"
        const val REALLOC = "realloc"
        const val EVAL_BEFORE = "eval_before"
        private const val EVAL_ACCURACY = "accuracy"
        private const val EVAL_LOSS = "mean_loss"
        private const val EVAL_EXAMPLES = "examples"
    }
}
