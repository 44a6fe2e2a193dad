package org.mobilepeft.demo

import java.io.File
import java.nio.FloatBuffer
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Tensor
import org.pytorch.executorch.training.SGD
import org.pytorch.executorch.training.TrainingModule

/**
 * Trains a `pte` bundle: `model.pte` (joint forward+backward method [Contract.METHOD_TRAIN], loss is
 * output 0) + `adapters.ptd` (only the adapter tensors) with ExecuTorch's training API and plain SGD,
 * the only optimiser ExecuTorch ships on device.
 *
 * Inputs, in the contract's order: pixel_values [B,3,S,S] f32, input_ids [B,T] i64, labels [B,T] i64,
 * then one rank mask [r_max] f32 per rank_schedule.masks entry. A new phase of the schedule only
 * changes the mask values; no re-export, no reload.
 *
 * API as read in pytorch/executorch (extension/android/executorch_android/.../training/TrainingModule.kt
 * and SGD.kt; usage as in TrainingModuleE2ETest.kt): `TrainingModule.load(pte, ptd)`,
 * `executeForwardBackward(method, vararg EValue)`, `namedParameters(method)`, `namedGradients(method)`,
 * `SGD.create(params, lr, momentum, dampening, weightDecay, nesterov)`, `sgd.step(gradients)`.
 */
class EtTrainer(private val manifest: Manifest) : BundleTrainer {
    private val module: TrainingModule = TrainingModule.load(
        manifest.file(Contract.PTE_FILE).absolutePath,
        manifest.file(Contract.PTD_FILE).absolutePath,
    )

    // The JNI layer wraps each parameter's runtime memory in a direct buffer (jni_layer.cpp,
    // newJTensorFromTensor), so SGD updates, and our restores, reach the weights the next step uses.
    private val parameters: Map<String, Tensor> = module.namedParameters(Contract.METHOD_TRAIN)
    private val sgd: SGD = SGD.create(parameters, manifest.optimizer.lr, 0.0, 0.0, 0.0, false)

    init {
        val expected = manifest.trainable.map { it.name }.toSet()
        val missing = expected - parameters.keys
        if (missing.isNotEmpty()) {
            // UNVERIFIED: that ExecuTorch's parameter FQNs equal the manifest's trainable names
            // (the Python exporter writes both from the same module; checked here at run time).
            throw BundleError("model.pte has no parameters $missing (it has ${parameters.keys.sorted()}); re-export the bundle.")
        }
    }

    override fun step(step: Int, batch: Batch): Float {
        val inputs = ArrayList<EValue>()
        inputs += EValue.from(Tensor.fromBlob(batch.pixelValues, batch.pixelShape))
        inputs += EValue.from(Tensor.fromBlob(batch.inputIds, batch.textShape))
        inputs += EValue.from(Tensor.fromBlob(batch.labels, batch.textShape))
        for ((slot, mask) in manifest.masksAt(step)) {
            inputs += EValue.from(Tensor.fromBlob(mask, longArrayOf(slot.rMax.toLong())))
        }
        val outputs = module.executeForwardBackward(Contract.METHOD_TRAIN, *inputs.toTypedArray())
        val loss = outputs[0].toTensor().dataAsFloatArray[0]
        sgd.step(module.namedGradients(Contract.METHOD_TRAIN))
        return loss
    }

    /** Copies of the current adapter tensors (the Kotlin API has no save call; we copy them out). */
    fun trainableValues(): Map<String, Pair<LongArray, FloatArray>> =
        manifest.trainable.associate { t -> t.name to (parameters.getValue(t.name).shape() to parameters.getValue(t.name).dataAsFloatArray) }

    override fun saveCheckpoint(dir: File, step: Int) {
        dir.mkdirs()
        Checkpoint.writeSafetensors(File(dir, Checkpoint.TENSORS_FILE), trainableValues(), mapOf("step" to step.toString()))
        Checkpoint.writeState(dir, step, manifest)
    }

    override fun restoreCheckpoint(dir: File): Int {
        val state = Checkpoint.readState(dir, manifest) ?: return 0
        val saved = Checkpoint.readSafetensors(File(dir, Checkpoint.TENSORS_FILE))
        for ((name, tensor) in parameters) {
            val values = saved[name]?.second ?: throw BundleError("checkpoint in ${dir.path} has no tensor '$name'; delete it to start over.")
            // Tensor.getRawDataBuffer() is public (@DoNotStrip) in ExecuTorch's Tensor.kt; for parameters it is
            // the runtime's own memory. UNVERIFIED on a device.
            val buffer = tensor.getRawDataBuffer() as FloatBuffer
            require(buffer.capacity() == values.size) { "checkpoint tensor '$name' has ${values.size} values; the model has ${buffer.capacity()}" }
            buffer.rewind()
            buffer.put(values)
        }
        return state
    }

    override fun close() = module.close()
}
