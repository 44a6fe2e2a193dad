package org.mobilepeft.demo

import ai.onnxruntime.OnnxTensor
import ai.onnxruntime.OrtEnvironment
import ai.onnxruntime.OrtTrainingSession
import java.io.File
import java.nio.FloatBuffer
import java.nio.LongBuffer
import org.mobilepeft.core.Batch
import org.mobilepeft.core.BundleError
import org.mobilepeft.core.Contract
import org.mobilepeft.core.Manifest
import org.mobilepeft.core.Trainer

/**
 * Trains an `onnx` bundle with ONNX Runtime training (artifact
 * `com.microsoft.onnxruntime:onnxruntime-training-android`, 1.19.2, the last release): the four
 * artifacts of `onnxruntime.training.artifacts.generate_artifacts` named in the manifest's
 * `methods` (training / eval / optimizer model and the checkpoint holding the adapter weights and
 * optimiser state). The optimiser (AdamW for this SDK's bundles) is baked into the optimizer model
 * at export; the manifest's lr is set on the session.
 *
 * `trainStep(Map)` passes inputs by position (the names are only checked), so the map is built in
 * the order of `getTrainInputNames()`: the contract's pixel_values, input_ids, labels, then the
 * masks named by [Contract.maskInputName].
 *
 * API as read in microsoft/onnxruntime java/src/main/java/ai/onnxruntime/OrtTrainingSession.java and
 * OrtEnvironment.java: `OrtEnvironment.createTrainingSession(checkpoint, train, eval, optimizer)`,
 * `trainStep(Map<String, OnnxTensorLike>)`, `optimizerStep()`, `lazyResetGrad()`,
 * `setLearningRate(float)`, `saveCheckpoint(Path, boolean)`, `getTrainInputNames()`. The Java API has
 * no call that reads one parameter by name, so [parameters] is empty: the personal adapter of an
 * `onnx` run is made by the SDK from the saved ORT checkpoint.
 */
class OrtTrainer private constructor(private val manifest: Manifest, bundleDir: File, checkpoint: File) : Trainer {
    private val env: OrtEnvironment = OrtEnvironment.getEnvironment()
    private val session: OrtTrainingSession
    private val inputOrder: List<String>

    init {
        fun file(key: String) = File(bundleDir, manifest.methods[key] as String).absolutePath
        session = env.createTrainingSession(
            checkpoint.absolutePath,
            file(Contract.MethodKey.TRAINING_MODEL),
            file(Contract.MethodKey.EVAL_MODEL),
            file(Contract.MethodKey.OPTIMIZER_MODEL),
        )
        session.setLearningRate(manifest.optimizer.lr.toFloat())
        val expected = listOf(Contract.INPUT_PIXEL_VALUES, Contract.INPUT_IDS, Contract.INPUT_LABELS) + manifest.schedule.maskInputs.map { it.input }
        inputOrder = session.trainInputNames.toList()
        if (inputOrder.toSet() != expected.toSet()) {
            throw BundleError(bundleDir.path, listOf("the training model takes $inputOrder; the manifest describes $expected. Re-export the bundle"))
        }
    }

    override fun forwardBackward(batch: Batch, masks: List<FloatArray>): Float {
        val byName = HashMap<String, OnnxTensor>()
        try {
            byName[Contract.INPUT_PIXEL_VALUES] = OnnxTensor.createTensor(env, FloatBuffer.wrap(batch.pixelValues), batch.pixelShape)
            byName[Contract.INPUT_IDS] = OnnxTensor.createTensor(env, LongBuffer.wrap(batch.inputIds), batch.textShape)
            // labels [B, T] as for ExecuTorch: the exported training graph computes the loss itself.
            byName[Contract.INPUT_LABELS] = OnnxTensor.createTensor(env, LongBuffer.wrap(batch.labels), batch.textShape)
            for ((slot, mask) in manifest.schedule.maskInputs.zip(masks)) {
                byName[slot.input] = OnnxTensor.createTensor(env, FloatBuffer.wrap(mask), longArrayOf(slot.rMax.toLong()))
            }
            val ordered = LinkedHashMap<String, OnnxTensor>()
            for (name in inputOrder) ordered[name] = byName.getValue(name)
            return session.trainStep(ordered).use { result ->
                val value = (result.get(Contract.OUTPUT_LOSS).orElse(null) ?: result.get(0)) as OnnxTensor
                value.floatBuffer.get(0)
            }
        } finally {
            byName.values.forEach { it.close() }
        }
    }

    override fun applyStep() {
        session.optimizerStep()
        session.lazyResetGrad() // gradients accumulate across trainStep calls otherwise
    }

    override fun discardStep() {
        session.lazyResetGrad()
    }

    override fun parameters(): Map<String, FloatArray> = emptyMap()

    /** ORT's own checkpoint (weights + optimiser state); the core's store renames the directory into place. */
    override fun save(dir: File) {
        session.saveCheckpoint(File(dir, CHECKPOINT_FILE).toPath(), true)
    }

    override fun close() {
        session.close()
    }

    companion object {
        /** The app's own file in a checkpoint directory (not part of the bundle contract). */
        const val CHECKPOINT_FILE = "ort_checkpoint"

        /** The session reads its checkpoint when it is created: the bundle's, or a saved one to resume. */
        fun open(manifest: Manifest, bundleDir: File, resumeFrom: File?): OrtTrainer = OrtTrainer(
            manifest,
            bundleDir,
            resumeFrom?.let { File(it, CHECKPOINT_FILE) } ?: File(bundleDir, manifest.methods[Contract.MethodKey.CHECKPOINT] as String),
        )
    }
}
