package org.mobilepeft.demo

import java.io.File
import org.mobilepeft.core.Batch
import org.mobilepeft.core.BundleError
import org.mobilepeft.core.Contract
import org.mobilepeft.core.MaskInput

/** One graph input by name: float32 ([floats]) or int64 ([longs]) values, row-major, and the shape. */
class InputValue(val name: String, val shape: LongArray, val floats: FloatArray? = null, val longs: LongArray? = null)

/**
 * The contract's graph inputs of one step by name (pixel_values, input_ids, labels, then one rank
 * mask per `rank_schedule.mask_inputs` entry), for both engines. Each engine orders them by what
 * its runtime reports or the manifest lists (ExecuTorch and ONNX Runtime both bind inputs by
 * position), never by the map's insertion order.
 */
object GraphInputs {
    fun of(batch: Batch, masks: List<FloatArray>, maskInputs: List<MaskInput>): LinkedHashMap<String, InputValue> {
        if (masks.size != maskInputs.size) {
            throw IllegalArgumentException("${masks.size} rank masks for ${maskInputs.size} mask inputs")
        }
        val out = LinkedHashMap<String, InputValue>()
        out[Contract.INPUT_PIXEL_VALUES] = InputValue(Contract.INPUT_PIXEL_VALUES, batch.pixelShape, floats = batch.pixelValues)
        out[Contract.INPUT_IDS] = InputValue(Contract.INPUT_IDS, batch.textShape, longs = batch.inputIds)
        out[Contract.INPUT_LABELS] = InputValue(Contract.INPUT_LABELS, batch.textShape, longs = batch.labels)
        for ((slot, mask) in maskInputs.zip(masks)) {
            out[slot.input] = InputValue(slot.input, longArrayOf(slot.rMax.toLong()), floats = mask)
        }
        return out
    }

    /** [order]'s names resolved in [byName]; a name the step does not provide fails with the bundle named. */
    fun <T> ordered(byName: Map<String, T>, order: List<String>, graph: String, bundleDir: File): List<T> {
        val missing = order.filter { it !in byName }
        if (missing.isNotEmpty()) {
            throw BundleError(
                bundleDir.path,
                listOf("the $graph takes inputs ${missing.take(3)} that the manifest does not describe (it gives ${byName.keys.take(5)}...); re-export the bundle"),
            )
        }
        return order.map { byName.getValue(it) }
    }

    /** The `name`s of a manifest tensor-spec list (`methods.train.inputs`, `methods.eval.inputs`, `methods.train_inputs`). */
    fun names(specs: Any?): List<String> = (specs as? List<*>).orEmpty().map { (it as Map<*, *>)[Contract.TensorSpecKey.NAME] as String }
}
