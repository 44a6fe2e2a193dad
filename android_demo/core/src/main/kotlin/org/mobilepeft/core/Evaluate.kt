package org.mobilepeft.core

/**
 * Accuracy with a bundle's eval graph (runtime/evaluate.py). An answer counts as correct when every
 * labelled token (the answer and its `<eos>`) is the argmax of the logits one position earlier:
 * with teacher forcing this equals exact match under greedy decoding.
 */
object Evaluate {
    /**
     * `correct_answers`: `[B]`, whether every labelled `labels[:, t + 1]` is `argmax logits[:, t]`
     * ([logits] `[B, T, V]`, [labels] `[B, T]`, row-major). Ties go to the first index and a NaN
     * wins, as numpy's argmax.
     */
    fun correctAnswers(logits: FloatArray, labels: LongArray, batch: Int, textLen: Int, ignoreIndex: Int = Contract.IGNORE_INDEX): BooleanArray {
        require(labels.size == batch * textLen) { "labels hold ${labels.size} values; expected $batch x $textLen" }
        require(logits.size % (batch * textLen) == 0) { "logits hold ${logits.size} values, not a multiple of $batch x $textLen" }
        val vocab = logits.size / (batch * textLen)
        return BooleanArray(batch) { b ->
            (0 until textLen - 1).all { t ->
                val target = labels[b * textLen + t + 1]
                target == ignoreIndex.toLong() || argmax(logits, (b * textLen + t) * vocab, vocab).toLong() == target
            }
        }
    }

    private fun argmax(a: FloatArray, from: Int, n: Int): Int {
        var best = 0
        for (i in 0 until n) {
            val v = a[from + i]
            if (v.isNaN()) return i
            if (v > a[from + best]) best = i
        }
        return best
    }

    class Report(val accuracy: Double, val loss: Double, val examples: Int)

    /**
     * `evaluate_bundle`'s loop: batches of the bundle's fixed size, the last padded by repeating
     * its last example (padded rows not counted), accuracy over all examples and the mean loss
     * weighted by real rows.
     */
    fun run(trainer: Trainer, count: Int, batchSize: Int, ignoreIndex: Int, masks: List<FloatArray>, batchOf: (IntArray) -> Batch): Report {
        if (count < 1) throw DataError("the eval data has no examples.")
        var correct = 0
        var weighted = 0.0
        var start = 0
        while (start < count) {
            val real = minOf(batchSize, count - start)
            val indices = IntArray(batchSize) { start + minOf(it, real - 1) }
            val batch = batchOf(indices)
            val (loss, logits) = trainer.evaluate(batch, masks)
            correct += correctAnswers(logits, batch.labels, batch.batchSize, batch.textLen, ignoreIndex).take(real).count { it }
            weighted += loss.toDouble() * real
            start += batchSize
        }
        return Report(correct.toDouble() / count, weighted / count, count)
    }
}
