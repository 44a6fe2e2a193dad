package org.mobilepeft.core

import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder
import org.junit.Assert.assertEquals
import org.junit.Assert.assertNull
import org.junit.Test

/**
 * The loop's on-device re-allocation against fixtures/realloc_loop.json (runtime/realloc.py's
 * `Reallocator` driven as runtime/trainer.py drives it), and its eval before/after.
 */
class TrainingReallocTest {
    private val fx = Fixtures.json("realloc_loop.json")
    private val schedule = RankSchedule.read(fx["schedule"])
    private val trainable = fx["trainable"].list().map { e ->
        val o = e.obj()
        Trainable(
            o[Contract.TrainableKey.NAME].str(), o[Contract.TrainableKey.MODULE].str(), o[Contract.TrainableKey.SLOT].str(),
            o[Contract.TrainableKey.ROLE].str(), o[Contract.TrainableKey.PARAM].str(), o[Contract.TrainableKey.SHAPE].longs(),
            o[Contract.TrainableKey.DTYPE].str(),
        )
    }
    private val factors = fx["grad_factors"].floats()
    private val steps = fx["steps"].int()

    /** make_fixtures.py's `grid(shape, salt)`: k/64 in [-1, 1), exact in float32. */
    private fun grid(n: Int, salt: Int) = FloatArray(n) { (((it * 37 + salt * 11) % 128) - 64) / 64f }

    private fun tensor(unit: Any?, role: String) = trainable.first { Units.key(it.module, it.slot) == unit && it.role == role }

    private class Log {
        var calls = 0
        val masks = mutableListOf<List<Double>>()
        val written = mutableListOf<Map<String, FloatArray>>()
    }

    /** Gradients of tensor i at step s: `grid(shape, 3 i + s) * factor`; an applied step is SGD with lr 0.125. */
    private inner class Fake(private val log: Log) : Trainer {
        val params = LinkedHashMap<String, FloatArray>().apply { trainable.forEachIndexed { i, t -> put(t.name, grid(t.numel, i)) } }
        private var grads: Map<String, FloatArray> = emptyMap()

        override fun forwardBackward(batch: Batch, masks: List<FloatArray>): Float {
            val s = log.calls++
            log.masks += masks.map { m -> m.sum().toDouble() }
            grads = trainable.withIndex().associate { (i, t) ->
                t.name to grid(t.numel, 3 * i + s).also { g -> for (j in g.indices) g[j] *= factors[i % factors.size] }
            }
            return 1f
        }

        override fun gradients() = grads

        override fun applyStep() {
            for ((name, g) in grads) params.getValue(name).let { p -> for (j in p.indices) p[j] = p[j] - 0.125f * g[j] }
        }

        override fun discardStep() {}

        override fun setParameters(values: Map<String, FloatArray>) {
            log.written += values.mapValues { it.value.copyOf() }
            for ((k, v) in values) v.copyInto(params.getValue(k))
        }

        override fun save(dir: File) {
            val tensors = params.mapValues { (k, v) -> Tensor(trainable.first { it.name == k }.shape, v) }
            File(dir, "p.safetensors").writeBytes(Safetensors.bytes(tensors, emptyMap()))
        }

        fun restore(dir: File) {
            for ((k, t) in Safetensors.read(File(dir, "p.safetensors")).first) t.data.copyInto(params.getValue(k))
        }

        override fun parameters() = params.mapValues { it.value.copyOf() }

        override fun close() {}
    }

    private fun batchOf(indices: IntArray) = Batch(FloatArray(0), LongArray(indices.size) { indices[it].toLong() }, LongArray(indices.size), indices.size, 0, 1)

    private fun loop(dir: File, log: Log, every: Int = 100, cancelled: () -> Boolean = { false }) = TrainingLoop(
        schedule, "bundle-h", examples = 7, batchSize = 3, batchOf = ::batchOf,
        options = TrainOptions(steps, checkpointEvery = every, seed = fx["seed"].long(), onDeviceRealloc = true, reallocEvery = fx["every"].int()),
        store = CheckpointStore(dir),
        factory = TrainerFactory { from -> Fake(log).also { f -> from?.let(f::restore) } },
        cancelled = cancelled,
        trainable = trainable,
    )

    private fun run() = File(Fixtures.tempDir("realloc-"), "run")

    private fun sha(v: FloatArray): String {
        val b = ByteBuffer.allocate(4 * v.size).order(ByteOrder.LITTLE_ENDIAN)
        v.forEach { b.putFloat(it) }
        return Checksums.sha256Of(b.array())
    }

    private fun assertEvents(expected: List<*>, actual: List<Map<String, Any?>>) {
        assertEquals("events", expected.size, actual.size)
        for ((e, a) in expected.zip(actual)) {
            assertEquals(e.obj().keys.toList(), a.keys.toList())
            for ((k, v) in e.obj()) {
                if (v is Double) assertClose(v, (a[k] as Number).toDouble(), "event $k") else assertEquals("event $k", Json.dumps(v), Json.dumps(a[k]))
            }
        }
    }

    private fun assertFinal(result: TrainResult) {
        assertEquals(steps, result.step)
        assertEvents(fx["events"].list(), result.events)
        assertEquals(Json.dumps(fx["final_ranks"]), Json.dumps(result.ranks))
        for ((name, hash) in fx["final_params_sha256"].obj()) assertEquals("final $name", hash, sha(result.parameters.getValue(name as String)))
    }

    private fun expectedMasks() = fx["masks"].list().map { m -> m.doubles().toList() }

    @Test
    fun uniformDrawsAreNumpys() {
        // The grown rows are numpy's default_rng([seed, step]).uniform(-b, b).astype(float32), bit for bit.
        for (g in fx["grown"].list()) {
            val rng = NumpyRandom.of(fx["seed"].long(), g.obj()["step"].long())
            for ((unit, rows) in g.obj()["down_rows"].obj()) {
                val fanIn = tensor(unit, Contract.ROLE_DOWN).shape[1].toInt()
                val expected = rows.floats()
                assertBitIdentical(expected, Reallocator.growInit(rng, expected.size / fanIn, fanIn), "grown $unit")
            }
        }
    }

    @Test
    fun reallocationEventsMasksAndGrownValuesAreTheSdks() {
        val log = Log()
        val result = loop(run(), log).run()
        assertFinal(result)
        assertEquals(expectedMasks(), log.masks)
        // What the loop wrote back at each applied decision: the grown down rows, up columns zero.
        val grown = fx["grown"].list()
        assertEquals(grown.size, log.written.size)
        for ((g, written) in grown.zip(log.written)) {
            val event = fx["events"].list().first { it.obj()["step"] == g.obj()["step"] }.obj()
            for ((unit, rows) in g.obj()["down_rows"].obj()) {
                val (a, b) = event["changed"].obj()[unit].ints()
                val down = tensor(unit, Contract.ROLE_DOWN)
                val up = tensor(unit, Contract.ROLE_UP)
                val fanIn = down.shape[1].toInt()
                assertBitIdentical(rows.floats(), written.getValue(down.name).copyOfRange(a * fanIn, b * fanIn), "grown $unit")
                val w = written.getValue(up.name)
                val rMax = up.shape[1].toInt()
                for (o in 0 until up.shape[0].toInt()) for (c in a until b) assertEquals("up[$o, $c] of $unit", 0f, w[o * rMax + c])
            }
        }
    }

    @Test
    fun aResumedRunReallocatesAsAnUninterruptedOne() {
        for (cancelAt in listOf(3, 5)) { // just before the step-3 decision; between decisions (the EMA comes from the checkpoint)
            val dir = run()
            val log = Log()
            val first = loop(dir, log, every = 2, cancelled = { log.calls == cancelAt }).run()
            assertEquals(StopReason.CANCELLED, first.stop)
            val sq = CheckpointStore(dir).meta(first.checkpoint!!)[TrainingLoop.REALLOC].obj()[RankSignals.STATE_SQ].obj()
            assertEquals(fx["ema_sq"].list()[cancelAt - 1].obj().keys, sq.keys)
            val second = loop(dir, log, every = 2).run()
            assertEquals(cancelAt, second.resumedFrom)
            assertFinal(second)
            assertEquals(expectedMasks(), log.masks)
        }
    }

    @Test
    fun theEmaIsTheSdksAfterEveryStep() {
        val dir = run()
        loop(dir, Log(), every = 1).run()
        val store = CheckpointStore(dir)
        for (ckpt in store.complete()) { // the newest two are kept
            val meta = store.meta(ckpt)
            val s = Py.toInt(meta[CheckpointStore.STEP]).toInt()
            val sq = meta[TrainingLoop.REALLOC].obj()[RankSignals.STATE_SQ].obj()
            val expected = fx["ema_sq"].list()[s - 1].obj()
            assertEquals(expected.keys, sq.keys)
            for ((u, v) in expected) assertClose(v.double(), sq[u].double(), "EMA of $u at step $s")
        }
    }

    /** Eval: after training the answer to example i is right when i % 3 != 0 or i == 6; before, never. */
    private class EvalFake(private val log: Log) : Trainer {
        var trained = false
        override fun forwardBackward(batch: Batch, masks: List<FloatArray>): Float = 1f.also { log.calls++ }
        override fun applyStep() {
            trained = true
        }
        override fun discardStep() {}
        override fun save(dir: File) {}
        override fun parameters() = emptyMap<String, FloatArray>()
        override fun close() {}

        override fun evaluate(batch: Batch, masks: List<FloatArray>): Pair<Float, FloatArray> {
            // [B, T=2, V=2], labels [ignore, 1]: the logits at t=0 favour 1 when the answer is right.
            val logits = FloatArray(batch.batchSize * 4)
            for (b in 0 until batch.batchSize) {
                val i = batch.inputIds[2 * b].toInt()
                val right = trained && (i % 3 != 0 || i == 6)
                logits[b * 4 + if (right) 1 else 0] = 1f
            }
            return batch.inputIds[0].toFloat() to logits // loss: the batch's first index
        }
    }

    @Test
    fun evalBeforeAndAfterCountsPaddedRowsOnce() {
        val batches = mutableListOf<List<Long>>()
        val evalSet = EvalSet(7, { idx ->
            batches += idx.map(Int::toLong)
            Batch(FloatArray(0), LongArray(2 * idx.size) { idx[it / 2].toLong() }, LongArray(2 * idx.size) { if (it % 2 == 0) Contract.IGNORE_INDEX.toLong() else 1L }, idx.size, 0, 2)
        })
        val dir = run()
        val log = Log()
        val reported = mutableListOf<Pair<Int, Double>>()
        val listener = object : TrainListener {
            override fun onEval(step: Int, report: Evaluate.Report) {
                reported += step to report.accuracy
            }
        }
        fun evalLoop(cancelled: () -> Boolean = { false }) = TrainingLoop(
            schedule, "bundle-e", examples = 7, batchSize = 3, batchOf = ::batchOf, options = TrainOptions(4, checkpointEvery = 2),
            store = CheckpointStore(dir), factory = TrainerFactory { from -> EvalFake(log).also { f -> if (from != null) f.trained = true } },
            cancelled = cancelled, listener = listener, evalSet = evalSet,
        )
        val first = evalLoop { log.calls == 2 }.run()
        assertEquals(0.0, first.evalBefore!!.accuracy, 0.0)
        assertNull(first.evalAfter) // cancelled: no eval at the end
        assertEquals(listOf(listOf(0L, 1L, 2L), listOf(3L, 4L, 5L), listOf(6L, 6L, 6L)), batches)
        val second = evalLoop().run()
        assertEquals(0.0, second.evalBefore!!.accuracy, 0.0) // read back from the checkpoint, not re-run
        assertEquals(6, batches.size)
        val after = second.evalAfter!!
        assertEquals(7, after.examples)
        assertEquals(5.0 / 7, after.accuracy, 1e-12) // 1, 2, 4, 5, 6: the padded copies of 6 count once
        assertEquals((0.0 * 3 + 3.0 * 3 + 6.0 * 1) / 7, after.loss, 1e-12)
        // The listener hears both reports as they happen (the resumed run re-reports the saved one).
        assertEquals(listOf(0 to 0.0, 0 to 0.0, 4 to 5.0 / 7), reported)
    }
}
