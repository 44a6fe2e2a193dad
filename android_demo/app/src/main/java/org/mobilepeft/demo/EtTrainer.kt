package org.mobilepeft.demo

import java.io.File
import java.nio.FloatBuffer
import org.mobilepeft.core.Batch
import org.mobilepeft.core.BundleError
import org.mobilepeft.core.CheckpointError
import org.mobilepeft.core.Contract
import org.mobilepeft.core.Manifest
import org.mobilepeft.core.Safetensors
import org.mobilepeft.core.Tensor as CoreTensor
import org.mobilepeft.core.Trainer
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Tensor
import org.pytorch.executorch.training.SGD
import org.pytorch.executorch.training.TrainingModule

/**
 * Trains a `pte` bundle: the manifest's `methods.program` (`model.pte`: the joint forward+backward
 * method, loss at output 0) + `methods.trainable_data` (`adapters.ptd`: only the adapter tensors)
 * with ExecuTorch's training API and plain SGD, the only optimiser ExecuTorch ships on device.
 *
 * Inputs, in the contract's order: pixel_values [B,3,S,S] f32, input_ids [B,T] i64, labels [B,T] i64,
 * then one rank mask [r_max] f32 per rank_schedule.mask_inputs entry (the core's masks). A new phase
 * only changes the mask values; no re-export, no reload.
 *
 * API as read in pytorch/executorch (extension/android/executorch_android/.../training/TrainingModule.kt
 * and SGD.kt; usage as in TrainingModuleE2ETest.kt): `TrainingModule.load(pte, ptd)`,
 * `executeForwardBackward(method, vararg EValue)` (the user outputs only: loss is `[0]`),
 * `namedParameters(method)` (live buffers), `namedGradients(method)` (valid after a forward),
 * `SGD.create(params, lr, momentum, dampening, weightDecay, nesterov)`, `sgd.step(gradients)`.
 */
class EtTrainer private constructor(private val manifest: Manifest, bundleDir: File) : Trainer {
    private val method: String = (manifest.methods[Contract.MethodKey.TRAIN] as Map<*, *>)[Contract.MethodKey.METHOD] as String
    private val module: TrainingModule = TrainingModule.load(
        File(bundleDir, manifest.methods[Contract.MethodKey.PROGRAM] as String).absolutePath,
        File(bundleDir, manifest.methods[Contract.MethodKey.TRAINABLE_DATA] as String).absolutePath,
    )

    // The JNI layer wraps each parameter's runtime memory in a direct buffer (jni_layer.cpp,
    // newJTensorFromTensor), so SGD updates, and our restores, reach the weights the next step uses.
    private val parameters: Map<String, Tensor> = module.namedParameters(method)
    private val sgd: SGD = SGD.create(parameters, manifest.optimizer.lr, 0.0, 0.0, 0.0, false)
    private var gradients: Map<String, Tensor>? = null

    init {
        val missing = manifest.trainable.map { it.name }.toSet() - parameters.keys
        if (missing.isNotEmpty()) {
            // UNVERIFIED: that ExecuTorch's parameter FQNs equal the manifest's trainable names
            // (the Python exporter writes both from the same module; checked here at run time).
            throw BundleError(bundleDir.path, listOf("the program has no parameters $missing (it has ${parameters.keys.sorted()}); re-export the bundle"))
        }
    }

    override fun forwardBackward(batch: Batch, masks: List<FloatArray>): Float {
        val inputs = ArrayList<EValue>()
        inputs += EValue.from(Tensor.fromBlob(batch.pixelValues, batch.pixelShape))
        inputs += EValue.from(Tensor.fromBlob(batch.inputIds, batch.textShape))
        inputs += EValue.from(Tensor.fromBlob(batch.labels, batch.textShape))
        for ((slot, mask) in manifest.schedule.maskInputs.zip(masks)) {
            inputs += EValue.from(Tensor.fromBlob(mask, longArrayOf(slot.rMax.toLong())))
        }
        val outputs = module.executeForwardBackward(method, *inputs.toTypedArray())
        gradients = module.namedGradients(method)
        return outputs[0].toTensor().dataAsFloatArray[0]
    }

    override fun gradientsFinite(): Boolean = gradients.orEmpty().values.all { g -> g.dataAsFloatArray.all { it.isFinite() } }

    override fun applyStep() {
        sgd.step(gradients ?: error("applyStep without a forwardBackward"))
        gradients = null
    }

    // The runtime recomputes the gradients on every forward (nothing accumulates): dropping them is enough.
    override fun discardStep() {
        gradients = null
    }

    /** Copies of the adapter tensors (the Kotlin API has no save call; they are copied out). */
    override fun parameters(): Map<String, FloatArray> = manifest.trainable.associate { it.name to parameters.getValue(it.name).dataAsFloatArray }

    override fun save(dir: File) {
        val tensors = manifest.trainable.associate { t -> t.name to CoreTensor(t.shape, parameters.getValue(t.name).dataAsFloatArray) }
        File(dir, TENSORS_FILE).writeBytes(Safetensors.bytes(tensors, emptyMap()))
    }

    private fun restore(dir: File) {
        val (saved, _) = Safetensors.read(File(dir, TENSORS_FILE))
        for ((name, tensor) in parameters) {
            val values = saved[name]?.data ?: throw CheckpointError("checkpoint $dir has no tensor '$name'; delete it to start over.")
            // Tensor.getRawDataBuffer() is public (@DoNotStrip) in ExecuTorch's Tensor.kt; for parameters it is
            // the runtime's own memory. UNVERIFIED on a device.
            val buffer = tensor.getRawDataBuffer() as FloatBuffer
            if (buffer.capacity() != values.size) throw CheckpointError("checkpoint tensor '$name' has ${values.size} values; the model has ${buffer.capacity()}")
            buffer.rewind()
            buffer.put(values)
        }
    }

    override fun close() = module.close()

    companion object {
        /** The app's own file in a checkpoint directory (not part of the bundle contract). */
        const val TENSORS_FILE = "adapter_tensors.safetensors"

        /** A trainer for [manifest], resumed from the checkpoint directory [resumeFrom] when given. */
        fun open(manifest: Manifest, bundleDir: File, resumeFrom: File?): EtTrainer =
            EtTrainer(manifest, bundleDir).also { t -> resumeFrom?.let(t::restore) }
    }
}
