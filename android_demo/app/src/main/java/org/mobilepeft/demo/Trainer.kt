package org.mobilepeft.demo

import java.io.File

/** What the activity needs from either runtime; one implementation per bundle format. */
interface BundleTrainer : AutoCloseable {
    /** One optimiser step on [batch] with the rank masks of the phase active at [step]; returns the loss. */
    fun step(step: Int, batch: Batch): Float

    /** Write a resumable checkpoint (atomically) for [step] into [dir]. */
    fun saveCheckpoint(dir: File, step: Int)

    /** Restore the checkpoint in [dir]; returns the step to continue from (0 when none). */
    fun restoreCheckpoint(dir: File): Int

    companion object {
        /** A trainer for [manifest]'s format, resumed from [checkpointDir] when it holds a checkpoint; and its step. */
        fun open(manifest: Manifest, checkpointDir: File): Pair<BundleTrainer, Int> = when (manifest.format) {
            Contract.FORMAT_PTE -> EtTrainer(manifest).let { it to it.restoreCheckpoint(checkpointDir) }
            Contract.FORMAT_ONNX -> OrtTrainer.open(manifest, checkpointDir)
            else -> throw BundleError("format '${manifest.format}' does not train on Android (Core ML bundles are iOS-only).")
        }
    }
}

/** Rank masks of the phase active at [step], in the graph's input order (manifest rank_schedule.masks). */
fun Manifest.masksAt(step: Int): List<Pair<MaskSlot, FloatArray>> {
    val phase = schedule.phases[schedule.phaseIndexAt(step)]
    return schedule.masks.map { it to schedule.maskValues(phase, it) }
}
