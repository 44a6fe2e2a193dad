package org.mobilepeft.core

/** Where a stream is: [index] examples into epoch [epoch]'s permutation of seed [seed]'s order. */
data class StreamPosition(val epoch: Int = 0, val index: Int = 0, val seed: Long = 0) {
    fun toJson(): Map<String, Any?> = linkedMapOf(EPOCH to epoch, INDEX to index, SEED to seed)

    companion object {
        const val EPOCH = "epoch"
        const val INDEX = "index"
        const val SEED = "seed"

        fun fromJson(o: Map<*, *>): StreamPosition =
            StreamPosition(Py.toInt(o[EPOCH]).toInt(), Py.toInt(o[INDEX]).toInt(), Py.toInt(o[SEED]))
    }
}

/**
 * The training order of runtime/data.py `DataStream`: fixed-size batches in a per-epoch shuffled
 * order that depends only on `(seed, epoch)` (`default_rng([seed, epoch]).permutation`, drawn as
 * numpy draws it), so restoring a [StreamPosition] reproduces the remaining batches exactly and
 * the phone visits examples in the reference runtime's order. A batch that crosses an epoch
 * boundary takes the rest of one epoch and the start of the next.
 */
class DataStream(val size: Int, val batchSize: Int, var position: StreamPosition = StreamPosition()) {
    init {
        if (size <= 0) throw DataError("the training data has no examples.")
        if (batchSize <= 0) throw ConfigError("batch size $batchSize; expected a positive number of examples.")
    }

    private var cached: Pair<Long, Int>? = null
    private var cachedOrder = IntArray(0)

    fun order(seed: Long, epoch: Int): IntArray {
        if (cached != seed to epoch) {
            cachedOrder = NumpyRandom.of(seed, epoch.toLong()).permutation(size)
            cached = seed to epoch
        }
        return cachedOrder
    }

    /** The example indices of the next batch; advances [position]. */
    fun next(): IntArray {
        val seed = position.seed
        var epoch = position.epoch
        var index = position.index
        val chosen = IntArray(batchSize)
        for (k in 0 until batchSize) {
            if (index == size) {
                epoch += 1
                index = 0
            }
            chosen[k] = order(seed, epoch)[index]
            index += 1
        }
        position = StreamPosition(epoch, index, seed)
        return chosen
    }
}
