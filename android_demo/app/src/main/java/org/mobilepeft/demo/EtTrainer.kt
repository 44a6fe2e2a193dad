package org.mobilepeft.demo

import android.util.Log
import java.io.File
import java.nio.FloatBuffer
import org.mobilepeft.core.Batch
import org.mobilepeft.core.BundleError
import org.mobilepeft.core.CheckpointError
import org.mobilepeft.core.ConfigError
import org.mobilepeft.core.Contract
import org.mobilepeft.core.Manifest
import org.mobilepeft.core.OptimizerSpec
import org.mobilepeft.core.Py
import org.mobilepeft.core.Safetensors
import org.mobilepeft.core.Tensor as CoreTensor
import org.mobilepeft.core.Trainer
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor
import org.pytorch.executorch.training.SGD
import org.pytorch.executorch.training.TrainingModule

/**
 * Trains a `pte` bundle as runtime/engine.py `PteEngine` does: `methods.program` (`model.pte`: the
 * joint forward+backward method, loss at output 0, and the `eval` method) with
 * `methods.trainable_data` (`adapters.ptd`: only the adapter tensors), ExecuTorch's SGD with the
 * manifest's `optimizer` section (lr, momentum, weight_decay; SGD is the only optimiser
 * ExecuTorch ships on device, anything else is refused).
 *
 * Inputs are bound by position, so they follow the manifest's `methods.train.inputs` /
 * `methods.eval.inputs` order (the exporter wrote both from the graphs); the eval method takes the
 * adapter tensors after the masks, in manifest `trainable` order, and returns (loss, logits).
 *
 * API as read in pytorch/executorch tag v1.4.1 (extension/android/executorch_android/src/main/java/
 * org/pytorch/executorch/training/TrainingModule.kt, SGD.kt, ../Module.kt, ../Tensor.kt, ../EValue.kt;
 * extension/android/jni/jni_layer_training.cpp, jni_layer.cpp; extension/training/module/training_module.cpp):
 * `TrainingModule.load(pte, ptd)`; `namedParameters(method)` (read from the method's outputs at load,
 * as TrainingModuleE2ETest does before its first step); `executeForwardBackward(method, vararg EValue)`
 * returns the user outputs only; `namedGradients(method)` (valid after a forward); `SGD.create(params,
 * lr, momentum, dampening, weightDecay, nesterov)`, `step(gradients)`; `Module.load(path, loadMode)`,
 * `execute(method, vararg EValue)`. The JNI wraps each runtime tensor's memory in a direct
 * ByteBuffer without copying (`newJTensorFromTensor`), so `getRawDataBuffer()` of a parameter is
 * the runtime's weight: SGD, [setParameters] and checkpoint restores write the weights the next
 * step uses.
 */
class EtTrainer private constructor(private val manifest: Manifest, private val bundleDir: File) : Trainer {
    private val train = manifest.methods[Contract.MethodKey.TRAIN] as Map<*, *>
    private val eval = manifest.methods[Contract.MethodKey.EVAL] as Map<*, *>
    private val method = train[Contract.MethodKey.METHOD] as String
    private val evalMethod = eval[Contract.MethodKey.METHOD] as String
    private val trainInputs = GraphInputs.names(train[Contract.MethodKey.INPUTS])
    private val evalInputs = GraphInputs.names(eval[Contract.MethodKey.INPUTS])
    private val program = File(bundleDir, manifest.methods[Contract.MethodKey.PROGRAM] as String)
    private val sgdOptions = SgdOptions.of(manifest.optimizer)
    private val module: TrainingModule = TrainingModule.load(
        program.absolutePath,
        File(bundleDir, manifest.methods[Contract.MethodKey.TRAINABLE_DATA] as String).absolutePath,
    )
    private val parameters: Map<String, Tensor> = module.namedParameters(method)
    private val sgd: SGD
    private var gradients: Map<String, Tensor>? = null
    private var evalModule: Module? = null

    init {
        checkTensors()
        sgd = SGD.create(parameters, sgdOptions.lr, sgdOptions.momentum, 0.0, sgdOptions.weightDecay, false)
    }

    /** runtime/engine.py `check_tensors`: the program trains exactly the manifest's tensors, same sizes. */
    private fun checkTensors() {
        // UNVERIFIED on a device: that ExecuTorch's FQNs are the manifest's names (the exporter writes both from one module).
        val expected = manifest.trainable.associateBy { it.name }
        val problems = (expected.keys - parameters.keys).sorted().map { "the program has no trainable tensor ${Py.repr(it)}" }.toMutableList()
        problems += (parameters.keys - expected.keys).sorted().map { "the program trains ${Py.repr(it)}, which the manifest does not list" }
        for (name in (expected.keys intersect parameters.keys).sorted()) {
            val got = parameters.getValue(name).shape().toList()
            if (got != expected.getValue(name).shape) problems += "$name: the program has $got, the manifest ${expected.getValue(name).shape}"
        }
        if (problems.isNotEmpty()) throw BundleError(bundleDir.path, problems.take(20) + "re-export the bundle")
    }

    private fun evalues(values: List<InputValue>): Array<EValue> = values.map { v ->
        EValue.from(if (v.floats != null) Tensor.fromBlob(v.floats, v.shape) else Tensor.fromBlob(v.longs!!, v.shape))
    }.toTypedArray()

    override fun forwardBackward(batch: Batch, masks: List<FloatArray>): Float {
        releaseEval() // the eval method's planned memory is not needed while training
        val byName = GraphInputs.of(batch, masks, manifest.schedule.maskInputs)
        val outputs = module.executeForwardBackward(method, *evalues(GraphInputs.ordered(byName, trainInputs, "training method", bundleDir)))
        gradients = module.namedGradients(method)
        return outputs[0].toTensor().dataAsFloatArray[0]
    }

    override fun gradientsFinite(): Boolean = gradients.orEmpty().values.all { g -> g.dataAsFloatArray.all { it.isFinite() } }

    override fun gradients(): Map<String, FloatArray> {
        val g = gradients ?: throw IllegalStateException("no pending gradients: call forwardBackward first")
        return manifest.trainable.associate { it.name to g.getValue(it.name).dataAsFloatArray }
    }

    override fun applyStep() {
        sgd.step(gradients ?: throw IllegalStateException("applyStep without a forwardBackward"))
        gradients = null
    }

    // The runtime recomputes the gradients on every forward (nothing accumulates): dropping them is enough.
    override fun discardStep() {
        gradients = null
    }

    /** Copies of the adapter tensors, by manifest name. */
    override fun parameters(): Map<String, FloatArray> = manifest.trainable.associate { it.name to parameters.getValue(it.name).dataAsFloatArray }

    /** Writes [values] into the runtime's own weights (on-device re-allocation's grown ranks, checkpoint restores). */
    override fun setParameters(values: Map<String, FloatArray>) {
        for ((name, v) in values) {
            val tensor = parameters[name] ?: throw IllegalArgumentException("no trainable tensor '$name' in the program")
            // UNVERIFIED on a device: the direct buffer is the runtime's weight memory (jni_layer.cpp wraps it without a copy).
            val buffer = tensor.getRawDataBuffer() as FloatBuffer
            if (buffer.capacity() != v.size) throw IllegalArgumentException("'$name' holds ${buffer.capacity()} values; got ${v.size}")
            buffer.rewind()
            buffer.put(v)
        }
    }

    /**
     * `PteEngine.evaluate`: the eval method at the current weights, which are its inputs after the
     * masks. It runs in a second [Module] on the same `model.pte` (mmapped, not copied): the Kotlin
     * `TrainingModule` runs joint-graph methods only. The eval method reads no external data, so
     * the program loads without the `.ptd` (checked with the ExecuTorch 1.5.1 runtime here: the same
     * loss and logits as with it). Closed again at the next training step.
     */
    override fun evaluate(batch: Batch, masks: List<FloatArray>): Pair<Float, FloatArray> {
        // UNVERIFIED on a device: a second Module on the same .pte beside the TrainingModule (checked with the Python runtime only).
        val evaluator = evalModule ?: Module.load(program.absolutePath, Module.LOAD_MODE_MMAP).also { evalModule = it }
        val byName: MutableMap<String, EValue> = LinkedHashMap()
        for ((name, v) in GraphInputs.of(batch, masks, manifest.schedule.maskInputs)) byName[name] = evalues(listOf(v))[0]
        // The live parameter tensors wrap the runtime's weights in direct buffers: passed without a copy.
        for (t in manifest.trainable) byName[t.name] = EValue.from(parameters.getValue(t.name))
        val outputs = evaluator.execute(evalMethod, *GraphInputs.ordered(byName, evalInputs, "eval method", bundleDir).toTypedArray())
        if (outputs.size < 2) throw BundleError(bundleDir.path, listOf("the eval method returned ${outputs.size} outputs; expected (loss, logits). Re-export the bundle"))
        return outputs[0].toTensor().dataAsFloatArray[0] to outputs[1].toTensor().dataAsFloatArray
    }

    private fun releaseEval() {
        evalModule?.let {
            it.close()
            evalModule = null
        }
    }

    override fun save(dir: File) {
        val tensors = manifest.trainable.associate { t -> t.name to CoreTensor(t.shape, parameters.getValue(t.name).dataAsFloatArray) }
        File(dir, TENSORS_FILE).writeBytes(Safetensors.bytes(tensors, emptyMap()))
    }

    private fun restore(dir: File) {
        val file = File(dir, TENSORS_FILE)
        if (!file.isFile) throw CheckpointError("checkpoint $dir has no $TENSORS_FILE (not written by the pte engine?); delete it to start over.")
        val (saved, _) = Safetensors.read(file.readBytes(), file.path)
        val missing = manifest.trainable.map { it.name }.filter { it !in saved }
        if (missing.isNotEmpty()) throw CheckpointError("checkpoint $dir lacks tensors ${missing.take(3)}; delete it to start over.")
        setParameters(manifest.trainable.associate { it.name to saved.getValue(it.name).data })
        if (sgdOptions.momentum != 0.0) {
            // ExecuTorch's Kotlin SGD keeps its momentum buffers in C++ with no accessor: they restart at zero.
            Log.w(TAG, "resumed with momentum ${sgdOptions.momentum}: ExecuTorch's SGD momentum buffers restart from zero")
        }
    }

    override fun close() {
        releaseEval()
        module.close()
    }

    /** The manifest's SGD settings, checked: what ExecuTorch's `SGD.create` takes. */
    class SgdOptions(val lr: Double, val momentum: Double, val weightDecay: Double) {
        companion object {
            fun of(spec: OptimizerSpec): SgdOptions {
                if (spec.name != "sgd") {
                    throw ConfigError(
                        "this pte bundle's optimizer is ${Py.repr(spec.name)}; ExecuTorch on Android ships only SGD " +
                            "(org.pytorch.executorch.training.SGD). Re-export the pte bundle with the SGD default, or export the onnx format for AdamW.",
                    )
                }
                fun number(key: String): Double {
                    val v = spec.raw[key] ?: return 0.0
                    val x = (v as? Number)?.toDouble() ?: throw ConfigError("optimizer.$key is ${Py.repr(v)}; expected a number >= 0.")
                    if (!x.isFinite() || x < 0) throw ConfigError("optimizer.$key is ${Py.repr(v)}; expected a finite number >= 0.")
                    return x
                }
                return SgdOptions(spec.lr, number(Contract.OptimizerKey.MOMENTUM), number(Contract.OptimizerKey.WEIGHT_DECAY))
            }
        }
    }

    companion object {
        private const val TAG = "EtTrainer"

        /** The app's own file in a checkpoint directory (not part of the bundle contract). */
        const val TENSORS_FILE = "adapter_tensors.safetensors"

        /** A trainer for [manifest], resumed from the checkpoint directory [resumeFrom] when given. */
        fun open(manifest: Manifest, bundleDir: File, resumeFrom: File?): EtTrainer {
            val trainer = EtTrainer(manifest, bundleDir)
            try {
                resumeFrom?.let(trainer::restore)
            } catch (e: Exception) {
                trainer.close()
                throw e
            }
            return trainer
        }
    }
}
