package org.mobilepeft.demo

import ai.onnxruntime.OnnxTensor
import ai.onnxruntime.OrtEnvironment
import ai.onnxruntime.OrtSession
import ai.onnxruntime.OrtTrainingSession
import java.io.File
import java.nio.FloatBuffer
import java.nio.LongBuffer
import org.mobilepeft.core.Batch
import org.mobilepeft.core.BundleError
import org.mobilepeft.core.ConfigError
import org.mobilepeft.core.Contract
import org.mobilepeft.core.Manifest
import org.mobilepeft.core.OrtCheckpoint
import org.mobilepeft.core.Py
import org.mobilepeft.core.Trainer

/**
 * Trains an `onnx` bundle as runtime/ort.py `OrtEngine` does, with ONNX Runtime training
 * (`com.microsoft.onnxruntime:onnxruntime-training-android`, 1.19.2, the last release): the four
 * artifacts of `generate_artifacts` named in the manifest's `methods` (training / eval / optimizer
 * model, and the checkpoint holding the adapter weights, the frozen backbone and the optimiser
 * state). The optimiser is the one built into `optimizer_model.onnx` (AdamW for this SDK's
 * exporter; SGD artifacts work the same way); the manifest's `optimizer.name` must say which, and
 * its lr is set on the session.
 *
 * `trainStep` / `evalStep` pass their inputs to the C API **by position** (the map's names are
 * only checked), so the maps are built in the order of `getTrainInputNames()` /
 * `getEvalInputNames()`, never in insertion order.
 *
 * What the Java API does not have (microsoft/onnxruntime `java/src/main/java/ai/onnxruntime/
 * OrtTrainingSession.java`, the version with `getTrainInputNames`, `lazyResetGrad`, `OrtCheckpointState`):
 * no call reads or writes a parameter or a gradient (the C API's `GetParameter`, `UpdateParameter`,
 * `CopyParametersToBuffer` are not bound), and `saveCheckpoint(path, saveOptimizer)` always writes
 * every parameter of the checkpoint state, frozen ones included. So:
 * * [parameters] are read back from the checkpoint this trainer last saved (core [OrtCheckpoint]),
 *   and only while no step was applied since; the personal adapter is written right after the
 *   final save;
 * * [gradients] and [setParameters] are unsupported: on-device re-allocation needs them (the app
 *   does not offer it for onnx bundles), [gradientsFinite] can only say true (a NaN loss is still
 *   caught by the loop);
 * * every checkpoint rewrites the frozen backbone: the app checkpoints onnx runs less often
 *   ([CHECKPOINT_EVERY]).
 */
class OrtTrainer private constructor(
    private val manifest: Manifest,
    private val bundleDir: File,
    checkpoint: File,
) : Trainer {
    private val env: OrtEnvironment = OrtEnvironment.getEnvironment()
    private val session: OrtTrainingSession
    private val trainOrder: List<String>
    private val evalOrder: List<String>
    private val lossOnly: Set<String>
    private var saved: Map<String, FloatArray> = emptyMap()
    private var stepsSinceSave = 0

    init {
        val name = manifest.optimizer.name
        if (name !in OPTIMIZERS) {
            throw ConfigError("this onnx bundle's optimizer is ${Py.repr(name)}; ONNX Runtime training artifacts carry ${OPTIMIZERS.joinToString(" or ")}. Re-export the bundle.")
        }
        fun file(key: String) = File(bundleDir, manifest.methods[key] as String).absolutePath
        session = env.createTrainingSession(
            checkpoint.absolutePath,
            file(Contract.MethodKey.TRAINING_MODEL),
            file(Contract.MethodKey.EVAL_MODEL),
            file(Contract.MethodKey.OPTIMIZER_MODEL),
        )
        try {
            session.setLearningRate(manifest.optimizer.lr.toFloat())
            // UNVERIFIED: that the 1.19.2 AAR has the revision read (getTrainInputNames / getEvalInputNames, trainStep(Map, Set)).
            trainOrder = session.trainInputNames.toList()
            evalOrder = session.evalInputNames.toList()
            val described = GraphInputs.names(manifest.methods[Contract.MethodKey.TRAIN_INPUTS])
            if (trainOrder.toSet() != described.toSet()) {
                throw BundleError(bundleDir.path, listOf("the training model takes $trainOrder; the manifest describes $described. Re-export the bundle"))
            }
            // The loss is all a step needs; not copying the logits [B, T, V] out of every step saves memory.
            lossOnly = if (Contract.OUTPUT_LOSS in session.trainOutputNames) setOf(Contract.OUTPUT_LOSS) else session.trainOutputNames
            saved = readTrainable(checkpoint)
        } catch (e: Exception) {
            session.close()
            throw e
        }
    }

    private fun readTrainable(file: File): Map<String, FloatArray> {
        val tensors = OrtCheckpoint.trainable(file)
        val missing = manifest.trainable.map { it.name }.filter { it !in tensors }
        if (missing.isNotEmpty()) throw BundleError(bundleDir.path, listOf("the ONNX Runtime checkpoint has no trainable tensors ${missing.take(3)}; re-export the bundle"))
        return manifest.trainable.associate { it.name to tensors.getValue(it.name).data }
    }

    /** [batch] and [masks] as ORT tensors, in [order]; the caller closes them. */
    private fun tensors(batch: Batch, masks: List<FloatArray>, order: List<String>, graph: String): LinkedHashMap<String, OnnxTensor> {
        val byName = GraphInputs.of(batch, masks, manifest.schedule.maskInputs)
        val out = LinkedHashMap<String, OnnxTensor>()
        try {
            for (v in GraphInputs.ordered(byName, order, graph, bundleDir)) {
                out[v.name] = if (v.floats != null) {
                    OnnxTensor.createTensor(env, FloatBuffer.wrap(v.floats), v.shape)
                } else {
                    OnnxTensor.createTensor(env, LongBuffer.wrap(v.longs!!), v.shape)
                }
            }
        } catch (e: Exception) {
            out.values.forEach { it.close() }
            throw e
        }
        return out
    }

    private fun floats(result: OrtSession.Result, name: String, index: Int): FloatArray {
        val value = (result.get(name).orElse(null) ?: result.get(index)) as OnnxTensor
        val buffer = value.floatBuffer
        return FloatArray(buffer.remaining()).also { buffer.get(it) }
    }

    override fun forwardBackward(batch: Batch, masks: List<FloatArray>): Float {
        val inputs = tensors(batch, masks, trainOrder, "training model")
        try {
            return session.trainStep(inputs, lossOnly).use { floats(it, Contract.OUTPUT_LOSS, 0)[0] }
        } finally {
            inputs.values.forEach { it.close() }
        }
    }

    override fun applyStep() {
        session.optimizerStep()
        session.lazyResetGrad() // ORT accumulates gradients across trainStep calls otherwise
        stepsSinceSave += 1
    }

    override fun discardStep() {
        session.lazyResetGrad()
    }

    /** `OrtEngine.evaluate`: the eval model (loss, logits) at the session's current weights. */
    override fun evaluate(batch: Batch, masks: List<FloatArray>): Pair<Float, FloatArray> {
        val inputs = tensors(batch, masks, evalOrder, "eval model")
        try {
            return session.evalStep(inputs).use { floats(it, Contract.OUTPUT_LOSS, 0)[0] to floats(it, Contract.OUTPUT_LOGITS, 1) }
        } finally {
            inputs.values.forEach { it.close() }
        }
    }

    /** The adapter tensors as of the last save (empty once a step was applied after it: the Java API cannot read them live). */
    override fun parameters(): Map<String, FloatArray> = if (stepsSinceSave == 0) saved else emptyMap()

    /** ORT's own checkpoint (weights, frozen backbone included, + optimiser state); the core's store renames the directory into place. */
    override fun save(dir: File) {
        val file = File(dir, CHECKPOINT_FILE)
        session.saveCheckpoint(file.toPath(), true)
        saved = readTrainable(file)
        stepsSinceSave = 0
    }

    override fun close() {
        session.close() // also closes the checkpoint state it owns
    }

    companion object {
        /** The app's own file in a checkpoint directory (not part of the bundle contract; runtime/ort.py's ORT_STATE). */
        const val CHECKPOINT_FILE = "ort_checkpoint"

        /** Steps between checkpoints of an onnx run: each one rewrites the whole backbone (see the class doc). */
        const val CHECKPOINT_EVERY = 50

        /** Optimisers `generate_artifacts` builds into `optimizer_model.onnx` (onnxblock.optim). */
        val OPTIMIZERS = listOf("adamw", "sgd")

        /** The session reads its checkpoint when it is created: the bundle's, or a saved one to resume. */
        fun open(manifest: Manifest, bundleDir: File, resumeFrom: File?): OrtTrainer = OrtTrainer(
            manifest,
            bundleDir,
            resumeFrom?.let { File(it, CHECKPOINT_FILE) } ?: File(bundleDir, manifest.methods[Contract.MethodKey.CHECKPOINT] as String),
        )
    }
}
