package org.mobilepeft.demo

import ai.onnxruntime.OnnxTensor
import ai.onnxruntime.OrtEnvironment
import ai.onnxruntime.OrtTrainingSession
import java.io.File
import java.nio.FloatBuffer
import java.nio.LongBuffer

/**
 * Trains an `onnx` bundle with ONNX Runtime training (artifact
 * `com.microsoft.onnxruntime:onnxruntime-training-android`, 1.19.2, the last release): the four
 * artifacts of `onnxruntime.training.artifacts.generate_artifacts` (training / eval / optimizer model
 * and the checkpoint holding the adapter weights and optimiser state). The optimiser (AdamW for this
 * SDK's bundles) is baked into `optimizer_model.onnx` at export; the manifest's lr is set on the session.
 *
 * Inputs are passed by graph input name (the contract's names; masks by [Contract.maskInputName]).
 *
 * API as read in microsoft/onnxruntime java/src/main/java/ai/onnxruntime/OrtTrainingSession.java and
 * OrtEnvironment.java: `OrtEnvironment.createTrainingSession(checkpoint, train, eval, optimizer)`,
 * `trainStep(Map<String, OnnxTensorLike>)`, `optimizerStep()`, `lazyResetGrad()`,
 * `setLearningRate(float)`, `saveCheckpoint(Path, boolean)`, `getTrainInputNames()`.
 */
class OrtTrainer(private val manifest: Manifest, checkpointOverride: File? = null) : BundleTrainer {
    private val env: OrtEnvironment = OrtEnvironment.getEnvironment()
    private val session: OrtTrainingSession

    init {
        val checkpoint = checkpointOverride ?: manifest.file(Contract.ONNX_CHECKPOINT_FILE)
        session = env.createTrainingSession(
            checkpoint.absolutePath,
            manifest.file(Contract.ONNX_TRAINING_FILE).absolutePath,
            manifest.file(Contract.ONNX_EVAL_FILE).absolutePath,
            manifest.file(Contract.ONNX_OPTIMIZER_FILE).absolutePath,
        )
        session.setLearningRate(manifest.optimizer.lr.toFloat())
        val expected = listOf(Contract.INPUT_PIXEL_VALUES, Contract.INPUT_IDS, Contract.INPUT_LABELS) + manifest.schedule.masks.map { it.inputName }
        val missing = expected - session.trainInputNames
        if (missing.isNotEmpty()) {
            throw BundleError("training_model.onnx lacks inputs $missing (has ${session.trainInputNames}); re-export the bundle.")
        }
    }

    override fun step(step: Int, batch: Batch): Float {
        val tensors = LinkedHashMap<String, OnnxTensor>()
        try {
            tensors[Contract.INPUT_PIXEL_VALUES] = OnnxTensor.createTensor(env, FloatBuffer.wrap(batch.pixelValues), batch.pixelShape)
            tensors[Contract.INPUT_IDS] = OnnxTensor.createTensor(env, LongBuffer.wrap(batch.inputIds), batch.textShape)
            // labels [B, T] as for ExecuTorch: the exported training graph computes the loss itself
            // (export/onnx.py: TrainingWrapper, generate_artifacts(loss=None)), so no shifting here.
            tensors[Contract.INPUT_LABELS] = OnnxTensor.createTensor(env, LongBuffer.wrap(batch.labels), batch.textShape)
            for ((slot, mask) in manifest.masksAt(step)) {
                tensors[slot.inputName] = OnnxTensor.createTensor(env, FloatBuffer.wrap(mask), longArrayOf(slot.rMax.toLong()))
            }
            val loss = session.trainStep(tensors).use { result ->
                // The loss is the graph's own output (Contract.OUTPUT_LOSS); ONNX_LOSS_OUTPUT is the name an
                // ORT-added loss block would have, kept as a fallback for bundles built that way.
                val named = listOf(Contract.OUTPUT_LOSS, Contract.ONNX_LOSS_OUTPUT)
                    .firstNotNullOfOrNull { name -> result.get(name).orElse(null) }
                val value = (named ?: result.get(0)) as OnnxTensor
                value.floatBuffer.get(0)
            }
            session.optimizerStep()
            session.lazyResetGrad() // gradients accumulate across trainStep calls otherwise
            return loss
        } finally {
            tensors.values.forEach { it.close() }
        }
    }

    /**
     * ORT saves its own checkpoint (weights + optimiser state) through the session; written to a temp
     * file, fsynced, then renamed over the previous one, like every checkpoint of this app.
     */
    override fun saveCheckpoint(dir: File, step: Int) {
        dir.mkdirs()
        Checkpoint.writeAtomic(File(dir, Checkpoint.ORT_CHECKPOINT_FILE)) { tmp ->
            session.saveCheckpoint(tmp.toPath(), true)
        }
        Checkpoint.writeState(dir, step, manifest)
    }

    /** The session reads its checkpoint when it is created: [open] builds one from the saved file. */
    override fun restoreCheckpoint(dir: File): Int =
        throw UnsupportedOperationException("use OrtTrainer.open(manifest, dir) to resume an ONNX Runtime checkpoint")

    override fun close() {
        session.close()
    }

    companion object {
        /** A trainer resumed from [dir] when it holds a checkpoint of this bundle, else a fresh one; and the step. */
        fun open(manifest: Manifest, dir: File): Pair<OrtTrainer, Int> {
            val state = Checkpoint.readState(dir, manifest)
            val saved = File(dir, Checkpoint.ORT_CHECKPOINT_FILE)
            return if (state != null && saved.exists()) OrtTrainer(manifest, saved) to state else OrtTrainer(manifest) to 0
        }
    }
}
